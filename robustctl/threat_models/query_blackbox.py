"""The query-based black box (``threat_model.blackbox.kind=query``; docs/method.md section 8.3.1):
the attacker can only query the deployed system (the target model behind its detector,
:class:`~robustctl.threat_models.deployed.DeployedSystem`), which answers a query with its
scores, or with "rejected" when the detector's score exceeds T (false-positive rate
``blackbox.fpr`` on clean validation images).

Attacks (``blackbox.query_attacks``): Square reads the scores, HopSkipJump only the labels; each
has its ``attack`` option's budget, overridden by ``threat_model.attack_params.<name>``. The
attacker, as in the transfer black box, holds the training inputs: HopSkipJump starts from the
nearest (L2) of ``blackbox.start_pool`` training images (a seeded draw, queried once, shared by
every point) that the system answers with another class and accepts (random noise, its default
start, is what a detector rejects), and from random images where the pool has none.

The points attacked are those the system answers correctly on the clean image (correct and
accepted, known from the evaluation's clean pass without a query). Per attack, logged under
``blackbox/<attack>/``: ``success_rate`` (Wilson interval) over those ``points``: the returned
example is misclassified **and** accepted; the mean ``distortion`` (bootstrap interval), ``l2``,
``linf`` and the ``median_distortion`` of the successful examples; ``queries_per_point`` and
``queries_per_success`` (the attack's own count); ``rejected_query_rate``: the share of its
queries the detector rejected; the detection AUC over (clean, adversarial) pairs; seconds.
HopSkipJump adds ``start_pool_queries`` and ``pool_start_rate``; ``blackbox/system_threshold``
is T.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import torch
from torch import Tensor

from robustctl import metric_keys as keys
from robustctl.attacks import build
from robustctl.attacks.metrics import per_example_distortions
from robustctl.data.base import seeded_permutation
from robustctl.evaluation.attack_runner import progress_bar, rate_metrics
from robustctl.evaluation.intervals import bootstrap_interval
from robustctl.evaluation.result import StageResult
from robustctl.inference import model_device
from robustctl.threat_models.context import ThreatContext, detect_scored, validation_threshold
from robustctl.threat_models.deployed import DeployedSystem


def system_threshold(ctx: ThreatContext) -> float:
    """T: the detector's threshold at ``blackbox.fpr`` on the clean validation images."""
    return validation_threshold(
        ctx.detector,
        ctx.model,
        ctx.data,
        ctx.outputs,
        ctx.cfg.threat_model.blackbox.fpr,
        ctx.cfg.evaluate.batch_size,
        "the query-based black box",
        "set dataset.val_fraction > 0, or threat_model.blackbox.kind=transfer",
    )


@torch.no_grad()
def pool_starts(
    system: DeployedSystem, pool: Tensor, x: Tensor, y: Tensor, batch_size: int
) -> tuple[Tensor, Tensor]:
    """(starts [N, ...], found [N] bool): per image of ``x``, the nearest (L2) image of ``pool``
    that ``system`` answers with a class other than y and accepts (one query per pool image);
    the image itself where the pool has none (``found`` False). CPU tensors."""
    device = model_device(system.model)
    labels, refused = [], []
    for start in range(0, len(pool), batch_size):
        logits, rejected = system.answer(pool[start : start + batch_size].to(device))
        labels.append(logits.argmax(1).cpu())
        refused.append(rejected.cpu())
    answer, rejected = torch.cat(labels), torch.cat(refused)
    distance = torch.cdist(x.flatten(1).double(), pool.flatten(1).double())  # [N, P]
    usable = (answer.view(1, -1) != y.view(-1, 1)) & ~rejected.view(1, -1)
    distance = distance.masked_fill(~usable, float("inf"))
    nearest = distance.argmin(1)
    found = usable.any(1)
    starts = torch.where(found.view(-1, *([1] * (x.dim() - 1))), pool[nearest], x)
    return starts, found


def run_query_attack(
    attack: Any, x: Tensor, y: Tensor, batch_size: int, starts: Tensor | None
) -> tuple[Tensor, Tensor]:
    """(x_adv, queries [N]) of ``attack`` on (x, y), ``batch_size`` images per call, with a
    progress bar; ``starts``: per-image starting points (HopSkipJump). CPU tensors."""
    parts, queries = [], []
    with progress_bar(True) as bar:
        task = None if bar is None else bar.add_task(attack.name, total=len(x), status="")
        for start in range(0, len(x), batch_size):
            end = start + batch_size
            given = {} if starts is None else {"start": starts[start:end]}
            result = attack(x[start:end], y[start:end], **given)
            parts.append(result.x_adv.cpu())
            queries.append(attack.last_queries.cpu())
            if bar is not None:
                bar.update(task, advance=len(result.x_adv))
    if not parts:
        return x.clone(), torch.zeros(0, dtype=torch.long)
    return torch.cat(parts), torch.cat(queries)


def outcome_metrics(
    name: str, x: Tensor, x_adv: Tensor, success: Tensor, queries: Tensor, seed: int
) -> dict[str, float]:
    """Success rate over the attacked points, distortions and queries of the successful ones."""

    def key(metric: str) -> str:
        return keys.attack_key(keys.BLACKBOX, name, metric)

    out = rate_metrics(key(keys.SUCCESS_RATE), success, torch.ones_like(success))
    out[key(keys.POINTS)] = float(len(success))
    per = per_example_distortions(x, x_adv)
    for metric in ("distortion", "l2", "linf"):
        chosen = per[metric][success]
        out[key(metric)] = float(chosen.mean()) if len(chosen) else float("nan")
    chosen = per["distortion"][success]
    out[key(keys.MEDIAN_DISTORTION)] = float(chosen.median()) if len(chosen) else float("nan")
    low, high = bootstrap_interval(chosen.numpy(), seed=seed)
    out[key(keys.ci_low("distortion"))], out[key(keys.ci_high("distortion"))] = low, high
    out[key(keys.QUERIES_PER_POINT)] = float(queries.double().mean()) if len(queries) else 0.0
    out[key(keys.QUERIES_PER_SUCCESS)] = (
        float(queries[success].double().mean()) if success.any() else float("nan")
    )
    return out


def run(ctx: ThreatContext) -> StageResult:
    """Every query attack against the deployed system (module docstring)."""
    tm = ctx.cfg.threat_model
    bb = tm.blackbox
    threshold = system_threshold(ctx)
    system = DeployedSystem(ctx.model, ctx.detector, threshold)
    accepted = torch.as_tensor(ctx.clean_scores) <= threshold
    todo = ((ctx.clean_pred == ctx.y) & accepted).nonzero().squeeze(1)
    x, y = ctx.x[todo], ctx.y[todo]
    out = StageResult(metrics={keys.BLACKBOX_SYSTEM_THRESHOLD: threshold})
    for name in bb.query_attacks:
        prefix = keys.attack_prefix(keys.BLACKBOX, name)
        key = partial(keys.attack_key, keys.BLACKBOX, name)
        params = {"seed": tm.seed, **dict(tm.attack_params.get(name, {}))}
        attack = build(name, system, **params)
        starts = None
        started = time.perf_counter()
        if name == "hsj":
            drawn = seeded_permutation(len(ctx.data.y_train), tm.seed)[: bb.start_pool]
            asked = system.queries
            starts, found = pool_starts(
                system, ctx.data.x_train[drawn], x, y, ctx.cfg.evaluate.batch_size
            )
            out.metrics[key(keys.START_POOL_QUERIES)] = float(system.queries - asked)
            out.metrics[key(keys.POOL_START_RATE)] = (
                float(found.double().mean()) if len(found) else float("nan")
            )
        asked, refused = system.queries, system.rejected  # the attack's own queries from here
        x_adv_todo, queries = run_query_attack(attack, x, y, tm.batch_size, starts)
        seconds = time.perf_counter() - started
        x_adv = ctx.x.clone()
        x_adv[todo] = x_adv_todo
        adv_pred, adv_scores, result = detect_scored(ctx, x_adv)
        broke = (adv_pred[todo] != y) & (adv_scores[todo] <= threshold)
        out.metrics.update(outcome_metrics(name, x, x_adv_todo, broke, queries, tm.seed))
        out.metrics[key(keys.REJECTED_QUERY_RATE)] = (system.rejected - refused) / max(
            system.queries - asked, 1
        )
        out.metrics[key(keys.SECONDS)] = seconds
        out.metrics.update(result.metrics(prefix))
        if result.auc is None:
            out.notes[prefix] = result.reason
            out.tags[keys.auc_reason_tag(keys.BLACKBOX, name)] = result.reason
    return out
