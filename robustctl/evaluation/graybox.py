"""Gray-box evaluation (SPEC section 8): attack the model, knowing nothing of the detector.

* :func:`run_attack_suite` runs each attack batch by batch on the model's device, with a progress
  bar, and returns an :class:`AttackOutcome` per attack: adversarial batch, success mask,
  predictions and the metrics ``graybox/<attack>/{success_rate,distortion,l2,linf,l0}``.
  ``success_rate`` is over the test examples the model classifies correctly (an attack on an
  already-misclassified example proves nothing); the distortions are means over the adversarial
  examples: classified correctly when clean *and* attacked successfully (the examples the
  detection AUC pairs with their clean versions). No such example gives NaN.
* :func:`resiliency_curve`: accuracy under FGSM/BIM for each eps (PDM Figure 3),
  ``resiliency/<attack>/eps_<eps>``; :func:`resiliency_figure` plots it.
* :func:`bim_gradient_norms`: the PDM section 4.2 diagnostic, the mean gradient norm after each
  BIM step (``graybox/<attack>/embed_grad_norm`` = mean ||dL/dz||_2 at the embedding z,
  ``graybox/<attack>/input_grad_norm`` = mean ||dL/dx||_2, L = CE of the prediction logits and
  the true label), as lists indexed by step (step 0 = the clean input), to log as step metrics.
* :func:`adversarial_confusion_figure` (origin class vs adversarial class, PDM Figure 1b) and
  :func:`example_grid_figure` return matplotlib Figures (Agg backend).

No MLflow here: the pipeline logs what these functions return.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustctl.attacks import BIM, Attack, build, build_from_config
from robustctl.attacks.base import flat_norm, model_device
from robustctl.attacks.metrics import distortion_metrics
from robustctl.evaluation.clean import confusion_matrix, plot_confusion

DEFAULT_RESILIENCY_EPS: tuple[float, ...] = (0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2)
GRAYBOX_METRICS = ("success_rate", "distortion", "l2", "linf", "l0")


@dataclass
class AttackOutcome:
    """One attack's result over the whole evaluation set (tensors on the CPU)."""

    name: str
    x_adv: Tensor            # [N, C, H, W] adversarial batch, in [0, 1]
    success: Tensor          # [N] bool: the attack's own criterion (untargeted: pred != y)
    adv_pred: Tensor         # [N] prediction on x_adv
    clean_pred: Tensor       # [N] prediction on the clean input
    labels: Tensor           # [N] true labels
    target: Tensor | None    # [N] targets of a targeted attack
    metrics: dict[str, float]
    seconds: float

    @property
    def adversarial(self) -> Tensor:
        """[N] bool: clean prediction correct and attack successful (what the distortions average)."""
        return self.success & (self.clean_pred == self.labels)

    def confusion_figure(self, class_names: Sequence[str]) -> Any:
        mask = self.adversarial
        return adversarial_confusion_figure(self.labels[mask], self.adv_pred[mask], class_names,
                                            title=f"{self.name}: origin vs adversarial class")


def _bar(enabled: bool) -> Any:
    if not enabled:
        return nullcontext(None)
    from robustctl.console import progress

    return progress()


def _resolve(spec: str | Attack | Any, model: nn.Module) -> Attack:
    if isinstance(spec, Attack):
        return spec
    if isinstance(spec, str):
        return build(spec, model)
    return build_from_config(spec, model)


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    predict = getattr(model, "predict_logits", None)
    out = predict(x) if callable(predict) else model(x)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def predict_labels(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Predicted classes [N] (CPU) through the prediction view, batch by batch in eval mode."""
    device = model_device(model, default=x.device)
    was_training = model.training
    model.eval()
    try:
        preds = [_logits(model, x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def graybox_metrics(name: str, x: Tensor, x_adv: Tensor, success: Tensor, clean_correct: Tensor) -> dict[str, float]:
    """``graybox/<name>/...``: success rate over clean-correct examples, distortions over adversarial ones."""
    rate = float(success[clean_correct].float().mean()) if clean_correct.any() else float("nan")
    dist = distortion_metrics(x, x_adv, success & clean_correct)
    return {f"graybox/{name}/success_rate": rate, **{f"graybox/{name}/{k}": v for k, v in dist.items()}}


def run_attack(attack: Attack, x: Tensor, y: Tensor, batch_size: int = 256, bar: Any = None,
               clean_pred: Tensor | None = None) -> AttackOutcome:
    """Run one attack over (x, y) batch by batch; see :func:`run_attack_suite`."""
    clean_pred = predict_labels(attack.model, x, batch_size) if clean_pred is None else clean_pred
    n_batches = max(math.ceil(len(x) / batch_size), 1)
    task = bar.add_task(attack.name, total=n_batches, status="") if bar is not None else None
    parts: list[tuple[Tensor, Tensor, Tensor, Tensor | None]] = []
    started = time.perf_counter()
    hits = done = 0
    for start in range(0, len(x), batch_size):
        result = attack(x[start:start + batch_size], y[start:start + batch_size])
        parts.append((result.x_adv.cpu(), result.success.cpu(), result.pred.cpu(),
                      None if result.target is None else result.target.cpu()))
        hits, done = hits + int(result.success.sum()), done + len(result.success)
        if bar is not None:
            bar.update(task, advance=1, status=f"success {hits / done:.1%}")
    seconds = time.perf_counter() - started
    if bar is not None:
        bar.remove_task(task)
    x_adv = torch.cat([p[0] for p in parts]) if parts else x.clone()
    success = torch.cat([p[1] for p in parts]) if parts else torch.zeros(0, dtype=torch.bool)
    adv_pred = torch.cat([p[2] for p in parts]) if parts else torch.zeros(0, dtype=torch.long)
    target = torch.cat([p[3] for p in parts]) if parts and parts[0][3] is not None else None
    y_cpu, x_cpu = y.cpu(), x.cpu()
    metrics = graybox_metrics(attack.name, x_cpu, x_adv, success, clean_pred == y_cpu)
    return AttackOutcome(attack.name, x_adv, success, adv_pred, clean_pred, y_cpu, target, metrics, seconds)


def run_attack_suite(model: nn.Module, x: Tensor, y: Tensor, attack_names_or_cfgs: Iterable[str | Attack | Any],
                     batch_size: int = 256, progress: bool = True) -> dict[str, AttackOutcome]:
    """Run each attack (an option name such as ``"fgsm-0.05"``, an ``attack`` config, or an
    :class:`Attack`) on (x, y); returns ``{attack name: AttackOutcome}``, in the given order."""
    attacks = [_resolve(spec, model) for spec in attack_names_or_cfgs]
    clean_pred = predict_labels(model, x, batch_size)
    outcomes: dict[str, AttackOutcome] = {}
    with _bar(progress) as bar:
        for attack in attacks:
            outcomes[attack.name] = run_attack(attack, x, y, batch_size, bar, clean_pred)
    return outcomes


def suite_metrics(outcomes: Mapping[str, AttackOutcome]) -> dict[str, float]:
    """All outcomes' metrics in one dict (what the pipeline logs)."""
    return {k: v for outcome in outcomes.values() for k, v in outcome.metrics.items()}


# ----------------------------------------------------------------------------------- resiliency
def resiliency_key(attack: str, eps: float) -> str:
    return f"resiliency/{attack}/eps_{eps:g}"


def resiliency_curve(model: nn.Module, x: Tensor, y: Tensor, attack: str = "fgsm",
                     eps_list: Sequence[float] = DEFAULT_RESILIENCY_EPS, batch_size: int = 256,
                     progress: bool = True, **params: Any) -> dict[str, float]:
    """Accuracy under ``attack`` (fgsm | bim, or any bounded option) for each eps: the fraction of
    (x, y) still classified correctly, keyed ``resiliency/<attack>/eps_<eps>``."""
    out: dict[str, float] = {}
    clean_pred = predict_labels(model, x, batch_size)
    with _bar(progress) as bar:
        for eps in eps_list:
            atk = build(attack, model, eps=float(eps), **params)
            atk.name = f"{attack}-{eps:g}"
            outcome = run_attack(atk, x, y, batch_size, bar, clean_pred)
            out[resiliency_key(attack, eps)] = float((outcome.adv_pred == outcome.labels).float().mean())
    return out


def resiliency_figure(metrics: Mapping[str, float], title: str = "resiliency") -> Any:
    """Accuracy vs eps, one line per attack found in ``resiliency/<attack>/eps_<eps>`` keys."""
    plt = _pyplot()
    curves: dict[str, list[tuple[float, float]]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "resiliency" and parts[2].startswith("eps_"):
            curves.setdefault(parts[1], []).append((float(parts[2][4:]), value))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for attack, points in sorted(curves.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=attack)
    ax.set_xlabel("eps (Linf, pixel units)")
    ax.set_ylabel("accuracy under attack")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if curves:
        ax.legend()
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------- BIM gradient norms
def embed_grad_norm_key(attack: str) -> str:
    return f"graybox/{attack}/embed_grad_norm"


def input_grad_norm_key(attack: str) -> str:
    return f"graybox/{attack}/input_grad_norm"


def _grad_norms(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor | None, Tensor]:
    """Per example (||dL/dz||_2 or None without an embedding, ||dL/dx||_2), L = CE(prediction logits, y)."""
    x = x.detach().requires_grad_(True)
    if all(hasattr(model, a) for a in ("embed", "head", "logit_sign")):
        z = model.embed(x)
        loss = F.cross_entropy(model.logit_sign * model.head(z), y, reduction="sum")
        gz, gx = torch.autograd.grad(loss, [z, x])
        return flat_norm(gz), flat_norm(gx)
    (gx,) = torch.autograd.grad(F.cross_entropy(_logits(model, x), y, reduction="sum"), x)
    return None, flat_norm(gx)


def bim_gradient_norms(model: nn.Module, x: Tensor, y: Tensor, eps: float = 0.1, steps: int = 10,
                       alpha: float | None = None, batch_size: int = 256, name: str | None = None) -> dict[str, list[float]]:
    """Mean gradient norms along BIM's path: ``{key: [value at step 0 (clean), 1, ..., steps]}``.

    Keys: ``graybox/<name>/embed_grad_norm`` (models with an embedding) and
    ``graybox/<name>/input_grad_norm``; ``name`` defaults to ``bim-<eps>``.
    """
    name = name or f"bim-{eps:g}"
    device = model_device(model, default=x.device)
    sums_z = torch.zeros(steps + 1, dtype=torch.float64)
    sums_x = torch.zeros(steps + 1, dtype=torch.float64)
    has_z = True
    attack = BIM(model, eps=eps, steps=steps, alpha=alpha)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)

        def record(k: int, x_k: Tensor, yb: Tensor = yb) -> None:
            nonlocal has_z
            gz, gx = _grad_norms(model, x_k, yb)
            sums_x[k] += float(gx.sum())
            if gz is None:
                has_z = False
            else:
                sums_z[k] += float(gz.sum())

        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                record(0, xb)
        finally:
            model.train(was_training)
        attack.step_callback = record
        attack(xb, yb)
    n = max(len(x), 1)
    out = {input_grad_norm_key(name): (sums_x / n).tolist()}
    if has_z:
        out = {embed_grad_norm_key(name): (sums_z / n).tolist(), **out}
    return out


# ------------------------------------------------------------------------------------- figures
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def adversarial_confusion_figure(orig_labels: Tensor, adv_labels: Tensor, class_names: Sequence[str],
                                 title: str = "origin vs adversarial class") -> Any:
    """Counts C[i, j] of adversarial examples of origin class i classified as j (PDM Figure 1b)."""
    k = len(class_names)
    conf = confusion_matrix(torch.as_tensor(orig_labels).cpu(), torch.as_tensor(adv_labels).cpu(), k)
    return plot_confusion(conf, class_names, f"{title} (n={int(conf.sum())})", xlabel="adversarial class",
                          ylabel="origin class", cmap="Reds", colorbar_label="fraction of row")


def _as_image(t: Tensor) -> np.ndarray:
    t = t.detach().cpu().float()
    return t[0].numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).numpy()


def example_grid_figure(x: Tensor, x_adv: Tensor, labels: Tensor | None = None, adv_labels: Tensor | None = None,
                        class_names: Sequence[str] | None = None, n: int = 8, title: str | None = None) -> Any:
    """Columns of up to ``n`` examples; rows: clean, adversarial, |x' - x| (scaled to its max)."""
    plt = _pyplot()
    n = max(1, min(n, len(x)))

    def label(t: Tensor | None, i: int) -> str:
        if t is None:
            return ""
        c = int(t[i])
        return class_names[c] if class_names is not None and c < len(class_names) else str(c)

    fig, axes = plt.subplots(3, n, figsize=(1.3 * n, 4.2), squeeze=False)
    cmap = "gray" if x.shape[1] == 1 else None
    for i in range(n):
        diff = (x_adv[i] - x[i]).abs()
        diff = diff / diff.max().clamp_min(1e-12)
        for row, (img, text) in enumerate(((x[i], label(labels, i)), (x_adv[i], label(adv_labels, i)),
                                           (diff, f"Linf {float((x_adv[i] - x[i]).abs().max()):.3f}"))):
            ax = axes[row, i]
            ax.imshow(_as_image(img).clip(0, 1), cmap=cmap, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(text, fontsize=7)
    for row, name in enumerate(("clean", "adversarial", "|x' - x|")):
        axes[row, 0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
