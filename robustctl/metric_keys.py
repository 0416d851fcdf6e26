"""Every MLflow metric key (and the tags that explain a missing one), defined once.

Code that logs a number builds its key here; code that reads keys back (the end-of-command
summary, the report tables) parses them here. ``docs/metrics.md`` documents each key: its
formula and the set of examples it is computed over.

Key families (``<attack>`` is an attack option such as ``fgsm-0.05``; ``<stage>`` a threat-model
stage):

======================================  ===================================================
``train/<term>``, ``train/accuracy``    per epoch, training batches (step = epoch)
``val/accuracy``, ``lr``, ``time/...``  per epoch (step = epoch); stage wall times
``clean/accuracy``                      the whole test split
``embed/<diagnostic>``                  test split (training batches for ``mean_norm``/``spread``)
``kde/<quantity>``                      the fitted detector
``graybox/<attack>/<metric>``           gray-box attacks on the attacked subset
``resiliency/<attack>/eps_<eps>``       accuracy under attack per budget
``bim_path/<attack>/<gradient>``        gradient norms along BIM's path (step = iteration)
``whitebox/cw_wb/<metric>``             white-box C&W-wb through model + detector
``blackbox/cw_wb/<metric>``, ``blackbox/proxy/<metric>``  black-box transfer from a proxy
======================================  ===================================================

Pure Python (no torch, no mlflow).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

# ------------------------------------------------------------------------------- stages
GRAYBOX, WHITEBOX, BLACKBOX, ROBUST = "graybox", "whitebox", "blackbox", "robust"
STAGES = (GRAYBOX, WHITEBOX, BLACKBOX, ROBUST)
CW_WB = "cw_wb"  # the attack of the white-box and black-box stages
FMN_WB = "fmn_wb"  # the white-box stage's minimum-norm attack
WHITEBOX_ATTACKS = (CW_WB, FMN_WB)  # the attacks threat_model.whitebox_attacks may list
RESILIENCY = "resiliency"
BIM_PATH = "bim_path"

# ------------------------------------------------------------------------------- training
TRAIN_LOSS = "train/loss"
TRAIN_ACCURACY = "train/accuracy"
VAL_ACCURACY = "val/accuracy"
LEARNING_RATE = "lr"
EPOCH_TIME = "time/epoch_s"
TRAIN_WALL_TIME = "train/wall_time_s"
EMBED_MEAN_NORM = "embed/mean_norm"  # mean ||z||_2 over the epoch's training batches
EMBED_SPREAD = "embed/spread"  # within-batch variance of z over its mean squared norm


def train_term(term: str) -> str:
    """``train/<term>``: the epoch mean of one loss term (``loss`` is the total)."""
    return f"train/{term}"


# ------------------------------------------------------------------------------- evaluation
CLEAN_ACCURACY = "clean/accuracy"
EMBED_DBI = "embed/dbi"
EMBED_DBI_REASON_TAG = "embed/dbi_reason"  # why embed/dbi is missing (too few test examples)
EMBED_CLUSTER_VARIANCE = "embed/cluster_variance"
EMBED_CLUSTER_DISTANCE = "embed/cluster_distance"
EMBED_INPUT_GRAD_NORM = "embed/input_grad_norm"  # mean ||d L_train / d x||_2 (was embed/grad_norm)
EMBED_INPUT_GRAD_NORM_CE = "embed/input_grad_norm_ce"  # mean ||d CE(prediction logits) / d x||_2
EMBED_GRAD_LOSS_TAG = (
    "embed/input_grad_norm_loss"  # which loss embed/input_grad_norm differentiates
)
EMBED_JACOBIAN_FRO = "embed/jacobian_fro"

KDE_BANDWIDTH = "kde/bandwidth"
KDE_KERNEL_POINTS = "kde/kernel_points"
KDE_HELDOUT_LOGLIK = "kde/heldout_loglik"
KDE_BANDWIDTH_EDGE_TAG = "kde/bandwidth_at_grid_edge"  # "low" | "high": the grid may be too narrow


def stage_time(stage: str) -> str:
    """``time/<stage>_s``: wall time of one threat-model stage."""
    return f"time/{stage}_s"


# ------------------------------------------------------------------------------- attacks
# metrics of one attack in a stage; success/distortions by the attack runner, pairs/auc by the AUC
# protocol
SUCCESS_RATE = "success_rate"  # over clean-correct examples: adv_pred != y
CLEAN_CORRECT = "clean_correct"  # the success rate's denominator
TARGET_RATE = "target_rate"  # targeted attacks: adv_pred == target, over clean-correct examples
DISTORTIONS = ("distortion", "l2", "linf", "l0")
PAIRS, AUC, SECONDS = "pairs", "auc", "seconds"
# gray-box: misclassification rate (over clean-correct examples) of Gaussian noise with each
# example's attack perturbation norm: the attack must beat it (robustctl.evaluation.sanity)
NOISE_SUCCESS_RATE = "noise_success_rate"
# white-box iteration check on a subset: C&W-wb as configured vs with twice the iterations
CHECK_SUCCESS_RATE = "check_success_rate"
MORE_ITERATIONS_SUCCESS_RATE = "more_iterations_success_rate"
# white-box: the L2 budget (normalized, like ``distortion``) at which half the clean-correct
# examples are breached; the whole curve is the artifact WHITEBOX_BUDGET_CURVE
MEDIAN_DISTORTION = "median_distortion"
WHITEBOX_BUDGET_CURVE = "whitebox/cw_wb_budget_curve.json"
# white-box convergence (robustctl.threat_models.convergence), per attack: 1.0 when one doubling
# of the iterations changed success by at most its standard error and the median breach
# distortion by less than the tolerance, else 0.0; the iterations factor the ladder ended at; the
# attack passes (example-iterations) spent per attacked example over the whole ladder; the curve
# is the artifact convergence_curve(attack)
CONVERGED = "converged"
BUDGET_FACTOR = "budget_factor"
PASSES_PER_EXAMPLE = "passes_per_example"
# every attack's cost per attacked example (robustctl.evaluation.attack_runner.run_attack):
# examples forwarded through the model, and input gradients back-propagated
FORWARDS_PER_EXAMPLE = "forwards_per_example"
BACKWARDS_PER_EXAMPLE = "backwards_per_example"

# the robust stage (robustctl.evaluation.robust_accuracy): robust/<member>/<metric>, and the
# ensemble's totals under robust/ensemble/<metric>
ENSEMBLE = "ensemble"
CLEAN_ACCURACY_METRIC = "clean_accuracy"  # over every attacked point
ROBUST_ACCURACY = "robust_accuracy"  # worst case per point; per member: after it ran
POINTS = "points"  # attacked points (the accuracies' denominator)
BROKEN = "broken"  # points a member broke first
PASSES_PER_POINT = "passes_per_point"  # forward-and-backward passes per point it attacked
QUERIES_PER_POINT = "queries_per_point"  # model evaluations (score-based attacks) per point
ROBUST_VERSION_TAG = "robust/version"  # "<version>, <norm> eps <eps>"
# with a detector (robust accuracy with rejection, at the threshold of ROBUST_THRESHOLD_TAG):
# robust/with-detector/clean_accuracy (correct and accepted), robust/detector-blind/robust_accuracy
# (the ensemble's breaking examples, rejected or not), robust/apgd-wb/<metric> (the adaptive attack)
WITH_DETECTOR, DETECTOR_BLIND, APGD_WB = "with-detector", "detector-blind", "apgd-wb"
THRESHOLD = "threshold"  # robust/with-detector/threshold: the detector's T
ROBUST_THRESHOLD_TAG = "robust/detector_threshold"  # "T at fpr <f> on <n> clean validation images"
ROBUST_BROKEN_BY = "robust/broken_by.json"  # per point: the member that broke it first


def robust_flag_tag(flag: str) -> str:
    """``robust/flag/<flag>``: ``raised: ...`` or ``clear: ...``
    (robustctl.evaluation.robust_flags)."""
    return f"robust/flag/{flag}"


# FMN-wb against C&W-wb, over the examples both breached: the median per-example ratio of their
# distortions (FMN-wb / C&W-wb) and the share where FMN-wb's is smaller
RATIO_TO_CW_WB = "ratio_to_cw_wb"
BELOW_CW_WB_RATE = "below_cw_wb_rate"


def budget_curve(attack: str) -> str:
    """The artifact of ``attack``'s per-example minimal breach distortions (white-box stage)."""
    return f"whitebox/{attack}_budget_curve.json"


def convergence_tag(attack: str) -> str:
    """The tag holding ``attack``'s convergence verdict in words (white-box stage)."""
    return f"whitebox/{attack}/convergence"


def convergence_curve(attack: str) -> str:
    """The artifact of ``attack``'s convergence ladder (white-box stage)."""
    return f"whitebox/{attack}_convergence.json"


# ------------------------------------------------------------------------------- intervals
CI_LEVEL = 0.95  # every ``*_ci_low`` / ``*_ci_high`` pair is a 95% interval
CI_SUFFIXES = ("_ci_low", "_ci_high")


def ci_low(key: str) -> str:
    """``<key>_ci_low``: lower end of the 95% interval of ``key`` (how: docs/metrics.md)."""
    return f"{key}_ci_low"


def ci_high(key: str) -> str:
    """``<key>_ci_high``: upper end of the 95% interval of ``key``."""
    return f"{key}_ci_high"


def is_interval(key: str) -> bool:
    return key.endswith(CI_SUFFIXES)


def attack_prefix(stage: str, attack: str) -> str:
    """``<stage>/<attack>``: the prefix of every metric of one attack in one stage."""
    return f"{stage}/{attack}"


def attack_key(stage: str, attack: str, metric: str) -> str:
    """``<stage>/<attack>/<metric>`` (e.g. ``graybox/fgsm-0.05/auc``)."""
    return f"{stage}/{attack}/{metric}"


def graybox(attack: str, metric: str) -> str:
    return attack_key(GRAYBOX, attack, metric)


def whitebox(metric: str) -> str:
    return attack_key(WHITEBOX, CW_WB, metric)


def blackbox(metric: str) -> str:
    return attack_key(BLACKBOX, CW_WB, metric)


# the query-based black box (robustctl.threat_models.query_blackbox), blackbox/<square|hsj>/:
# success_rate over POINTS (clean images the system answers correctly and accepts), the mean
# queries of the successful points, the share of the attack's queries the detector rejected; the
# threshold (blackbox/system_threshold); HopSkipJump's start pool: its queries (one per pool
# image, paid once) and the share of points that found a start in it
QUERIES_PER_SUCCESS = "queries_per_success"
REJECTED_QUERY_RATE = "rejected_query_rate"
START_POOL_QUERIES = "start_pool_queries"
POOL_START_RATE = "pool_start_rate"
BLACKBOX_SYSTEM_THRESHOLD = "blackbox/system_threshold"
BLACKBOX_PROXY_AGREEMENT = "blackbox/proxy/agreement"  # test images where proxy and target agree
BLACKBOX_PROXY_ACCURACY = "blackbox/proxy/accuracy"
BLACKBOX_TRANSFER_RATE = blackbox("transfer_rate")
BLACKBOX_PROXY_SUCCESS_RATE = blackbox("proxy_success_rate")
# transfer_rate's denominator: successful proxy adversarial examples on target-correct images
BLACKBOX_TRANSFER_CANDIDATES = blackbox("transfer_candidates")


class AttackKey(NamedTuple):
    stage: str
    attack: str
    metric: str


def parse_attack_key(key: str) -> AttackKey | None:
    """``graybox/fgsm-0.05/auc`` -> ("graybox", "fgsm-0.05", "auc"); None for any other key."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] in STAGES:
        return AttackKey(*parts)
    return None


def attacks_in(keys: object, stage: str) -> list[str]:
    """Attacks with at least one ``<stage>/<attack>/<metric>`` key, in first-seen order."""
    seen: dict[str, None] = {}
    for key in keys:  # type: ignore[attr-defined]
        parsed = parse_attack_key(key)
        if parsed is not None and parsed.stage == stage:
            seen.setdefault(parsed.attack)
    return list(seen)


# ------------------------------------------------------------------------------- resiliency
def resiliency(attack: str, eps: float) -> str:
    """``resiliency/<attack>/eps_<eps>``: accuracy under ``attack`` at budget ``eps``."""
    return f"{RESILIENCY}/{attack}/eps_{eps:g}"


def resiliency_curves(metrics: object) -> dict[str, dict[float, float]]:
    """``{attack: {eps: accuracy}}`` from the ``resiliency/<attack>/eps_<eps>`` keys of a
    metrics mapping."""
    curves: dict[str, dict[float, float]] = {}
    for key, value in metrics.items():  # type: ignore[attr-defined]
        parsed = parse_resiliency(key)
        if parsed is not None:
            curves.setdefault(parsed[0], {})[parsed[1]] = value
    return curves


def parse_resiliency(key: str) -> tuple[str, float] | None:
    """``resiliency/fgsm/eps_0.1`` -> ("fgsm", 0.1); None for any other key."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == RESILIENCY and parts[2].startswith("eps_"):
        return parts[1], float(parts[2][4:])
    return None


# ------------------------------------------------------------------------------- BIM path
EMBEDDING_GRAD_NORM = "embedding_grad_norm"  # mean ||dL/dz||_2 at the embedding z
INPUT_GRAD_NORM = "input_grad_norm"  # mean ||dL/dx||_2 at the input x


def bim_path(attack: str, gradient: str) -> str:
    """``bim_path/<attack>/<gradient>``: a gradient norm along BIM's path, one step per
    iteration."""
    return f"{BIM_PATH}/{attack}/{gradient}"


# ------------------------------------------------------------------------------- tags
def auc_reason_tag(stage: str, attack: str) -> str:
    """Tag saying why ``<stage>/<attack>/auc`` is missing (too few pairs)."""
    return f"{stage}/{attack}/auc_reason"


def note_tag(stage: str, attack: str) -> str:
    """Tag with a caveat on a present value (e.g. the white-box budget ran out)."""
    return f"{stage}/{attack}/note"


WHITEBOX_THRESHOLD_TAG = f"{WHITEBOX}/{CW_WB}/threshold"

# run identity tags (robustctl.tracking.lifecycle): runs with equal FINGERPRINT differ only in
# trainer.seed, so the report may average them; VARIANT names the loss options that depart from
# the loss's defaults (the paper's settings), "" when none do.
FINGERPRINT_TAG = "fingerprint"
# the evaluation stages logged in full, comma-separated in order: a resumed run skips them
COMPLETED_STAGES_TAG = "completed_stages"
CLEAN_STAGE, DETECTOR_STAGE, SANITY_STAGE = "clean", "detector", "sanity"
TRAINING_FINGERPRINT_TAG = "training_fingerprint"
VARIANT_TAG = "variant"
SEED_TAG = "seed"
# a distillation student's teacher (robustctl.train_defenses.distillation): its run and checkpoint
TEACHER_RUN_TAG = "teacher_run_id"
TEACHER_CHECKPOINT_TAG = "teacher_checkpoint"


def sanity_tag(check: str) -> str:
    """``sanity/<check>``: ``passed``, ``failed: ...`` or ``not checked: ...``
    (robustctl.evaluation.sanity)."""
    return f"sanity/{check}"


def sanity_results(tags: Mapping[str, str]) -> dict[str, str]:
    """{check: its tag's value} of the ``sanity/<check>`` tags among a run's ``tags``."""
    prefix = sanity_tag("")
    return {k[len(prefix) :]: v for k, v in tags.items() if k.startswith(prefix)}


def sanity_status(value: str) -> tuple[str, str]:
    """A ``sanity/<check>`` tag's value split into (status, detail): ``passed``, ``failed`` or
    ``not checked``, and what follows its ``: ``."""
    status, _, detail = value.partition(": ")
    return status, detail


# keys shown in the overview of the end-of-command summary (the stage tables show the rest)
STAGE_FAMILIES = (*STAGES, RESILIENCY, BIM_PATH)


def is_stage_family(key: str) -> bool:
    return key.split("/", 1)[0] in STAGE_FAMILIES


# the SLURM job a run's process ran in (robustctl.slurm_job): the job id (``<array job>_<task>``
# for array jobs) and how many times SLURM requeued it (pre-emption, time limit)
SLURM_JOB_TAG = "slurm/job_id"
SLURM_RESTARTS_TAG = "slurm/restarts"
