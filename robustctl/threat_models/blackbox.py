"""Black-box threat model: the attacker can query the target and has the training inputs, but
knows neither its weights nor its detector's. ``threat_model.blackbox.kind`` picks how it
attacks: ``transfer`` (below, PDM Appendix D), ``query`` (Square and HopSkipJump against the
model behind its detector: :mod:`robustctl.threat_models.query_blackbox`) or ``both``.

The transfer black box:

1. Distil a proxy (``threat_model.blackbox.proxy_model``) from the target's outputs on the
   training inputs (:mod:`robustctl.threat_models.distill`).
2. Fit the attacker's own detector (the ``defense`` config) on the proxy's training embeddings.
3. Run C&W-wb (``threat_model.whitebox`` parameters) through proxy + its detector.
4. Feed the adversarial examples to the target and score them with the target's detector.

Logged (PDM Table 4): the proxy's agreement with the target and accuracy on the test split; the
attack's success on the proxy (``blackbox/cw_wb/proxy_success_rate``, over proxy-correct
examples) and distortion; ``transfer_rate`` = of the successful proxy adversarial examples
(proxy correct on the clean image and fooled by the attack) whose clean image the target also
classifies correctly (``transfer_candidates`` of them), the share that fool the target too; the
target detector's AUC over its (clean, adversarial) pairs. Rates carry Wilson intervals.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from robustctl import metric_keys as keys
from robustctl.defenses import fit_detector, require_detector
from robustctl.evaluation.attack_runner import rate_metrics, run_attack
from robustctl.evaluation.result import StageResult
from robustctl.inference import ModelOutputs, model_device, predict_labels
from robustctl.models import OPTIONS, model_config
from robustctl.threat_models.context import ThreatContext, crafter, detect
from robustctl.threat_models.distill import distill
from robustctl.threat_models.query_blackbox import run as run_query
from robustctl.threat_models.stage import Column, Rows, Stage, register
from robustctl.threat_models.whitebox import cw_wb_attack


def proxy_config(ctx: ThreatContext) -> Any:
    """The proxy architecture: option ``blackbox.proxy_model`` with the target's settings where
    the two architectures share a key (a ResNet proxy of a ResNet: the target's width, activation
    and normalization; its own depth)."""
    name, target = ctx.cfg.threat_model.blackbox.proxy_model, vars(ctx.cfg.model)
    own = vars(OPTIONS.configs()[name])
    shared = {k: v for k, v in target.items() if k in own and k not in ("name", "depth")}
    return model_config(name, **shared)


def transfer_metrics(
    proxy_adversarial: Tensor, target_clean_pred: Tensor, target_adv_pred: Tensor, labels: Tensor
) -> dict[str, float]:
    """``transfer_rate`` (with its Wilson interval) over the ``transfer_candidates``: successful
    proxy adversarial examples whose clean image the target classifies correctly; a candidate
    transfers when the target misclassifies it too."""
    candidates = proxy_adversarial & (target_clean_pred == labels)
    return {
        **rate_metrics(keys.BLACKBOX_TRANSFER_RATE, target_adv_pred != labels, candidates),
        keys.BLACKBOX_TRANSFER_CANDIDATES: float(candidates.sum()),
    }


def run(ctx: ThreatContext) -> StageResult:
    """The kinds ``threat_model.blackbox.kind`` names (:data:`KINDS`), their results merged."""
    require_detector(ctx.detector, "threat_model stage blackbox")
    out = StageResult()
    for kind in ctx.cfg.threat_model.blackbox.kinds():
        part = KINDS[kind](ctx)
        for name in ("metrics", "step_metrics", "figures", "tags", "notes", "documents"):
            getattr(out, name).update(getattr(part, name))
    return out


def run_transfer(ctx: ThreatContext) -> StageResult:
    """The transfer black box (module docstring)."""
    cfg, tm = ctx.cfg, ctx.cfg.threat_model
    bb = tm.blackbox
    proxy = distill(
        ctx.model,
        ctx.data,
        proxy_config(ctx),
        mode=bb.mode,
        temperature=bb.temperature,
        epochs=bb.epochs,
        batch_size=bb.batch_size,
        lr=bb.lr,
        seed=tm.seed,
        device=model_device(ctx.model),
        target_outputs=ctx.outputs,
    )
    batch = cfg.evaluate.batch_size
    proxy_outputs = ModelOutputs(proxy.proxy, ctx.data, batch)  # the proxy's one pass per split
    proxy_detector = fit_detector(
        cfg.defense,
        proxy.proxy,
        ctx.data,
        batch,
        proxy_outputs,
        crafter(proxy.proxy, tm.batch_size),  # the attacker's detector learns from the proxy
    )
    proxy_pred = predict_labels(proxy.proxy, ctx.x, batch)
    attack = cw_wb_attack(tm.whitebox, proxy.proxy, proxy_detector, ctx.data, batch, proxy_outputs)
    outcome = run_attack(attack, ctx.x, ctx.y, tm.batch_size, None, proxy_pred, stage=keys.BLACKBOX)
    adv_pred, result = detect(ctx, outcome.x_adv)
    # the runner's success_rate is the proxy's own: logged under its own name (and interval)
    proxy_success = keys.blackbox(keys.SUCCESS_RATE)
    out = StageResult(
        metrics={
            keys.BLACKBOX_PROXY_AGREEMENT: proxy.agreement,
            keys.BLACKBOX_PROXY_ACCURACY: proxy.proxy_accuracy,
            **{
                key.replace(proxy_success, keys.BLACKBOX_PROXY_SUCCESS_RATE): value
                for key, value in outcome.metrics.items()
                if key.startswith(proxy_success)
            },
            **transfer_metrics(outcome.adversarial, ctx.clean_pred, adv_pred, ctx.y),
            keys.blackbox(keys.SECONDS): outcome.seconds,
            **{
                key: value
                for key, value in outcome.metrics.items()
                if keys.parse_attack_key(key).metric.startswith("distortion")
            },
            **result.metrics(keys.attack_prefix(keys.BLACKBOX, keys.CW_WB)),
        }
    )
    if result.auc is None:
        out.notes[keys.attack_prefix(keys.BLACKBOX, keys.CW_WB)] = result.reason
        out.tags[keys.auc_reason_tag(keys.BLACKBOX, keys.CW_WB)] = result.reason
    return out


KINDS = {"transfer": run_transfer, "query": run_query}  # threat_model.blackbox.kind

STAGE = register(
    Stage(
        name=keys.BLACKBOX,
        run=run,
        needs_detector=True,
        settings="blackbox",
        title="Black-box: transfer (Table 4) and queries",
        summary=Rows(
            "attack",
            (
                Column("proxy agreement", "agreement"),
                Column("transfer", "transfer_rate"),
                Column("query success", "success_rate"),
                Column("distortion", "distortion"),
                Column("queries / success", "queries_per_success"),
                Column("rejected queries", "rejected_query_rate"),
            ),
        ),
        description=Rows(
            "black-box",
            (
                Column("transfer rate", "transfer_rate"),
                Column("candidates", "transfer_candidates", count=True),
            ),
            label="C&W-wb from a proxy",
            attacks=(keys.CW_WB,),
        ),
    )
)
