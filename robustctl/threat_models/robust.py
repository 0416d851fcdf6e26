"""Robust threat model (today's standard evaluation): the attacker knows the model and has a fixed
budget; the question is how many test points no attack in the ensemble breaks.

Runs the ``threat_model.robust`` ensemble (:mod:`robustctl.evaluation.robust_accuracy`:
AutoAttack's ``standard``, ``plus`` or ``rand`` version at ``eps`` in the ``norm``) on the
attacked subset, worst case per point, then the evaluator's flags
(:mod:`robustctl.evaluation.robust_flags`). Logged: ``robust/ensemble/clean_accuracy`` and
``robust/ensemble/robust_accuracy`` with Wilson intervals over the attacked points; per member
the robust accuracy after it ran, the points it broke first, its passes and queries per attacked
point and its seconds; per flag the tag ``robust/flag/<name>`` (``raised: ...`` or ``clear:
...``); ``robust/broken_by.json`` (per point: label, the member that broke it or ``robust`` or
``misclassified``); and the plot of robust accuracy after each member.

With a detector (``defense=<detector>``) it also measures robust accuracy with rejection
(:mod:`robustctl.threat_models.rejection`): the detector's threshold at
``threat_model.robust.rejection.fpr`` on clean validation images, clean accuracy with the detector,
robust accuracy under the ensemble's own (detector-blind) examples and under the adaptive APGD-wb;
each point's outcome joins ``robust/broken_by.json`` and a bar plot compares the three accuracies.
"""

from __future__ import annotations

from typing import Any

from robustctl import metric_keys as keys
from robustctl.console import console
from robustctl.evaluation.result import StageResult
from robustctl.evaluation.robust_accuracy import CLEAN_WRONG, ROBUST, EnsembleResult, run_ensemble
from robustctl.evaluation.robust_flags import evaluation_flags
from robustctl.threat_models.context import ThreatContext
from robustctl.threat_models.rejection import RejectionResult, with_rejection
from robustctl.threat_models.stage import Column, Rows, Stage, register


def robust_accuracy_figure(result: EnsembleResult, title: str) -> Any:
    """Robust accuracy after each member (a falling staircase), clean accuracy first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(result.labels), 1)
    names = ["clean", *(m.label for m in result.members)]
    values = [float((result.clean_pred == result.labels).sum()) / n]
    values += [result.robust_after(i) / n for i in range(len(result.members))]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.5))
    ax.step(range(len(names)), values, where="post", marker="o")
    for i, v in enumerate(values):
        ax.annotate(f"{v:.3f}", (i, v), textcoords="offset points", xytext=(0, 6), ha="center")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy (worst case so far)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def rejection_figure(metrics: dict[str, float], title: str) -> Any:
    """Robust accuracy without the detector, with it under the detector-blind attack and under
    the adaptive one, each with its Wilson interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        ("no detector", keys.ENSEMBLE),
        ("detector,\nblind attack", keys.DETECTOR_BLIND),
        ("detector,\nadaptive attack", keys.APGD_WB),
    ]
    names, values, errors = [], [], [[], []]
    for name, slot in bars:
        k = keys.attack_key(keys.ROBUST, slot, keys.ROBUST_ACCURACY)
        names.append(name)
        values.append(metrics[k])
        errors[0].append(metrics[k] - metrics[keys.ci_low(k)])
        errors[1].append(metrics[keys.ci_high(k)] - metrics[k])
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.bar(range(len(names)), values, yerr=errors, capsize=4, color=["0.6", "C0", "C3"])
    for i, v in enumerate(values):
        ax.annotate(f"{v:.3f}", (i, v), textcoords="offset points", xytext=(12, 2))
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("robust accuracy (95% Wilson)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def broken_by_document(
    result: EnsembleResult, rejection: RejectionResult | None = None
) -> dict[str, Any]:
    """Per point: its label, the member that broke it first (or ``robust`` / ``misclassified``)
    and, with a detector, its outcome with rejection (``with_detector``)."""
    names = {ROBUST: "robust", CLEAN_WRONG: "misclassified"}
    names.update({i: m.label for i, m in enumerate(result.members)})
    points = [
        {"label": int(label), "broken_by": names[int(code)]}
        for label, code in zip(result.labels, result.broken_by, strict=True)
    ]
    document: dict[str, Any] = {"members": [m.label for m in result.members], "points": points}
    if rejection is not None:
        for point, outcome in zip(points, rejection.outcome, strict=True):
            point["with_detector"] = outcome
        document["detector_threshold"] = rejection.tag()
    return document


def run(ctx: ThreatContext) -> StageResult:
    tm = ctx.cfg.threat_model
    rc = tm.robust
    members = rc.ensemble()
    result = run_ensemble(
        ctx.model, ctx.x, ctx.y, members, rc.eps, rc.norm, tm.batch_size, seed=tm.seed
    )
    out = StageResult(metrics=result.metrics())
    out.tags[keys.ROBUST_VERSION_TAG] = f"{rc.version}, {rc.norm} eps {rc.eps:g}"
    raised = []
    for flag in evaluation_flags(ctx.model, ctx.x, ctx.y, result, tm.batch_size):
        state = "raised" if flag.raised else "clear"
        out.tags[keys.robust_flag_tag(flag.name)] = f"{state}: {flag.text}"
        if flag.raised:
            raised.append(f"flag {flag.name}: {flag.text}")
            console.print(f"[yellow]robust: flag {flag.name}: {flag.text}")
    if raised:  # the summary's note and the report's footnote on the robust accuracy
        out.notes[keys.attack_key(keys.ROBUST, keys.ENSEMBLE, keys.ROBUST_ACCURACY)] = "; ".join(
            raised
        )
        out.tags[keys.note_tag(keys.ROBUST, keys.ENSEMBLE)] = "; ".join(raised)
    robust = out.metrics[keys.attack_key(keys.ROBUST, keys.ENSEMBLE, keys.ROBUST_ACCURACY)]
    console.print(
        f"robust accuracy {robust:.4f} ({rc.version}, {rc.norm} eps {rc.eps:g}, "
        f"{len(result.labels)} points)"
    )
    rejection = None
    if ctx.detector is not None:
        rejection = with_rejection(ctx, result)
        out.metrics.update(rejection.metrics())
        out.tags[keys.ROBUST_THRESHOLD_TAG] = rejection.tag()
        adaptive = out.metrics[keys.attack_key(keys.ROBUST, keys.APGD_WB, keys.ROBUST_ACCURACY)]
        console.print(
            f"robust accuracy with the detector (threshold {rejection.tag()}): "
            f"{adaptive:.4f} under the adaptive attack"
        )
        out.figures["plots/robust/with_detector.png"] = rejection_figure(
            out.metrics, f"{ctx.data.name}: with rejection, {rc.norm} eps {rc.eps:g}"
        )
    out.documents[keys.ROBUST_BROKEN_BY] = broken_by_document(result, rejection)
    out.figures["plots/robust/robust_accuracy.png"] = robust_accuracy_figure(
        result, f"{ctx.data.name}: {rc.version} ensemble, {rc.norm} eps {rc.eps:g}"
    )
    return out


STAGE = register(
    Stage(
        name=keys.ROBUST,
        run=run,
        needs_detector=False,
        title="Robust accuracy, worst case per point",
        summary=Rows(
            "attack",
            (
                Column("clean acc.", keys.CLEAN_ACCURACY_METRIC),
                Column("robust acc.", keys.ROBUST_ACCURACY),
                Column("broken", keys.BROKEN, count=True),
                Column("passes/pt", keys.PASSES_PER_POINT),
                Column("queries/pt", keys.QUERIES_PER_POINT),
            ),
        ),
        description=Rows(
            "attack (in order)",
            (
                Column("clean accuracy", keys.CLEAN_ACCURACY_METRIC),
                Column("robust accuracy after it", keys.ROBUST_ACCURACY),
                Column("points it broke", keys.BROKEN, count=True),
                Column("passes per point", keys.PASSES_PER_POINT),
                Column("queries per point", keys.QUERIES_PER_POINT),
            ),
        ),
        settings="robust",
    )
)
