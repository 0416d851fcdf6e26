"""Kernel-density detector on the embedding layer (Feinman et al. 2017, "Detecting adversarial
samples from artifacts"; the detector of PDM, section 4; docs/method.md section 5).

Per class t keep a set Z_t of at most ``per_class`` clean training embeddings (the kernel
points). An input with embedding z whose predicted class is t gets the Gaussian kernel density

    KDE_t(z) = (1/|Z_t|) * sum_{z' in Z_t} exp(-||z - z'||^2 / sigma^2)   (docs/method.md section 5)

and the adversarial-ness score ``score(z, t) = -log KDE_t(z)`` (low density = adversarial, so a
larger score means "more adversarial"). Everything is computed in log space,

    log KDE_t(z) = logsumexp_{z' in Z_t}(-||z - z'||^2 / sigma^2) - log |Z_t|,

so it stays finite where exp underflows (64-d embeddings with a small sigma).

Normalization. ``log_density(z, t)`` is the log of the formula above (no normalizing factor, as
in the paper and Feinman et al.); it lies in (-inf, 0]. ``log_density(z, t, normalized=True)`` is
the log of a probability density on R^D: the kernel exp(-||d||^2 / sigma^2) integrates to
(pi sigma^2)^(D/2), so

    log p_t(z) = log KDE_t(z) - D log(sigma) - (D/2) log(pi).

That equals scikit-learn's ``KernelDensity(kernel="gaussian", bandwidth=h).score_samples`` with
h = sigma / sqrt(2) (sklearn's kernel is exp(-||d||^2 / (2 h^2))). The two differ by a constant
for a fixed sigma, so scores, thresholds and AUCs do not depend on the choice.

Bandwidth. ``bandwidth`` is sigma itself (a positive float), or ``"auto"`` (default): sigma is
chosen at ``fit`` on a grid by maximizing the mean held-out log-likelihood of the *normalized*
density, (1/H) sum_h log p_{y_h}(z_h) (the unnormalized density grows with sigma, so without the
sigma^-D factor the largest value would always win). The default grid is

    m * 10 ** linspace(log10(grid_min), log10(grid_max), grid_size),  default 1e-3 .. 1, 31 values

where m is the median pairwise distance between kernel points of the same class (at most 256
points per class enter the median); ``bandwidth_grid`` replaces it with explicit sigmas. A choice
on the edge of the grid gets a RuntimeWarning. Held-out data: ``fit(..., held_out=(z, y))`` when
given (scored against the kept kernel points); otherwise, per class, the training samples that
were not kept as kernel points (at most ``per_class`` of them), and for a class without such
leftovers a seeded ``holdout_fraction`` of its samples, scored against the rest of that class
(all of its samples are then kept as kernel points; a class with one sample contributes nothing).
The choice is stored as ``bandwidth_`` and the grid and its scores as ``bandwidth_grid_`` and
``bandwidth_scores_``; :meth:`KDEDetector.metrics` gives them as loggable numbers.

Memory and device. Queries are grouped by class and scored block by block: one block holds at
most ``chunk_size`` (query, kernel point) entries (default 2**22, 16 MiB in float32); blocks over
the kernel points are merged with logaddexp. The computation runs on the kernel points' device
(``.to(device)`` moves them; embeddings are moved there). Each block uses the expansion
-||z - z'||^2 = -||z||^2 + 2 z.z' - ||z'||^2 with the ||z||^2 term taken out of the logsumexp,
after centring queries and points on the class mean (which keeps the expansion accurate in
float32 for embeddings far from the origin). Scoring that runs out of device memory halves
``chunk_size`` (down to ``MIN_CHUNK_SIZE``, said once on the console) and retries: the blocks
change, the values only by round-off.

Gradient. ``log_density`` is differentiable w.r.t. the embeddings (not the kernel points) with the
analytic gradient

    d/dz logsumexp_j(-||z - p_j||^2 / sigma^2) = -(2 / sigma^2) * (z - sum_j w_j p_j),
    w_j = exp(-||z - p_j||^2 / sigma^2 - logsumexp_k(-||z - p_k||^2 / sigma^2)),

recomputed block by block in the backward pass, so a white-box attack that optimizes through the
detector also needs only O(chunk_size) extra memory. It is twice differentiable.

Departure from the paper: PDM and Feinman et al. tune sigma by hand per dataset; here it is
selected per fitted model, since a sigma tuned for one model's embeddings means nothing for
another's.

Example:
    >>> det = KDEDetector().fit(train_embeddings, train_labels, per_class=1000)
    >>> det.bandwidth_                                   # the selected sigma, to log
    >>> scores = det.score(test_embeddings, predicted)   # [M], larger = more adversarial
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from robustctl import metric_keys as keys
from robustctl.config.validation import configured, require
from robustctl.console import console
from robustctl.defenses.base import Detector, FitInputs, Probe
from robustctl.inference import MemoryBackoff

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_CHUNK_SIZE", "KDEConfig", "KDEDetector", "threshold_at"]

DEFAULT_CHUNK_SIZE = 2**22  # (query, kernel point) entries in one block: 16 MiB in float32
MIN_CHUNK_SIZE = 2**12  # out of device memory, blocks halve down to this (16 KiB in float32)
_MEDIAN_POINTS = 256  # points per class that enter the median pairwise distance (grid scale)


@dataclass
class KDEConfig:
    """The ``defense=kde`` option: the detector's settings (module docstring for the formulas).

    ``per_class``: kernel points kept per class (paper: 1000). ``bandwidth``: sigma of
    exp(-||z - z'||^2 / sigma^2), or ``auto``: the sigma on the grid
    ``m * 10**linspace(log10(grid_min), log10(grid_max), grid_size)`` (m = median within-class
    distance of the kernel points) that maximizes the held-out log-likelihood;
    ``bandwidth_grid`` lists explicit sigmas instead. ``holdout_fraction``: held out for the
    selection from classes with no samples beyond ``per_class``. ``chunk_size`` bounds one block of
    (query, kernel point) entries (2**22: 16 MiB in float32); ``seed`` drives the per-class
    subset and the held-out split.
    """

    name: str = "kde"
    per_class: int = 1000
    bandwidth: Any = "auto"  # "auto" or a positive float (OmegaConf has no float | str)
    grid_min: float = 1e-3
    grid_max: float = 1.0
    grid_size: int = 31
    bandwidth_grid: list[float] | None = None
    holdout_fraction: float = 0.2
    chunk_size: int = DEFAULT_CHUNK_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.per_class >= 1, "defense.per_class", f"must be >= 1, got {self.per_class}")
        bw = self.bandwidth
        if isinstance(bw, str) and bw != "auto":
            try:
                bw = float(bw)
            except ValueError:
                bw = None
        ok = bw == "auto" or (
            isinstance(bw, (int, float))
            and not isinstance(bw, bool)
            and math.isfinite(bw)
            and bw > 0
        )
        require(
            ok, "defense.bandwidth", f"must be 'auto' or a positive float, got {self.bandwidth!r}"
        )
        self.bandwidth = bw if bw == "auto" else float(bw)
        require(
            0 < self.grid_min < self.grid_max,
            "defense.grid_min",
            f"need 0 < grid_min < grid_max, got {self.grid_min} and {self.grid_max}",
        )
        require(
            math.isfinite(self.grid_max), "defense.grid_max", f"must be finite, got {self.grid_max}"
        )
        require(self.grid_size >= 2, "defense.grid_size", f"must be >= 2, got {self.grid_size}")
        if self.bandwidth_grid is not None:
            grid = list(self.bandwidth_grid)
            require(
                bool(grid) and all(math.isfinite(s) and s > 0 for s in grid),
                "defense.bandwidth_grid",
                f"must be null or a non-empty list of positive floats, got {grid}",
            )
        require(
            0 < self.holdout_fraction < 1,
            "defense.holdout_fraction",
            f"must be in (0, 1), got {self.holdout_fraction}",
        )
        require(self.chunk_size >= 1, "defense.chunk_size", f"must be >= 1, got {self.chunk_size}")


# ----------------------------------------------------------------------------------- kernel core
def _blocks(n_queries: int, n_points: int, chunk_size: int) -> tuple[int, int]:
    """Block sizes (queries, points) with queries * points <= chunk_size (at least 1 x 1).

    All points in one block when that leaves room for min(n_queries, 64) queries; otherwise
    blocks of that many queries, so that a block stays a matrix-matrix product.
    """
    bq_min = max(1, min(n_queries, 64, chunk_size))
    bp = max(1, min(n_points, chunk_size // bq_min))
    return max(1, chunk_size // bp), bp


def _log_kernel_sums(z: Tensor, p: Tensor, inv_s2: Sequence[float], chunk_size: int) -> Tensor:
    """L[i, k] = logsumexp_j(-||z_i - p_j||^2 * inv_s2[k]) for every k; [M, len(inv_s2)].

    Plain tensor code (callers disable autograd). Per block, G = 2 z.p^T - ||p||^2 is computed
    once and shared by all bandwidths (the grid search); -||z||^2 * inv_s2 is added at the end.
    """
    m, n = z.shape[0], p.shape[0]
    bq, bp = _blocks(m, n, chunk_size)
    z_sq, p_sq = (z * z).sum(1), (p * p).sum(1)
    out = z.new_empty(m, len(inv_s2))
    for i in range(0, m, bq):
        zi = z[i : i + bq]
        for j in range(0, n, bp):
            pj, pj_sq = p[j : j + bp], p_sq[j : j + bp]
            if len(inv_s2) > 1:
                g = torch.addmm(pj_sq.unsqueeze(0), zi, pj.T, beta=-1.0, alpha=2.0)
            for k, c in enumerate(inv_s2):
                if len(inv_s2) == 1:  # one bandwidth: fold it into the matmul
                    a = torch.addmm(pj_sq.unsqueeze(0), zi, pj.T, beta=-c, alpha=2.0 * c)
                else:
                    a = g * c
                top = a.amax(1, keepdim=True)
                lse = top.squeeze(1) + a.sub_(top).exp_().sum(1).log_()
                if j == 0:
                    out[i : i + bq, k] = lse
                else:
                    out[i : i + bq, k] = torch.logaddexp(out[i : i + bq, k], lse)
    return out - z_sq.unsqueeze(1) * torch.tensor(inv_s2, dtype=z.dtype, device=z.device)


class _LogKernelSum(torch.autograd.Function):
    """f(z)_i = logsumexp_j(-||z_i - p_j||^2 * inv_s2), chunked; gradient w.r.t. z only."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, p: Tensor, inv_s2: float, chunk_size: int) -> Tensor:  # type: ignore[override]
        out = _log_kernel_sums(z, p, [inv_s2], chunk_size)[:, 0]
        ctx.save_for_backward(z, p, out)
        ctx.inv_s2, ctx.chunk_size = inv_s2, chunk_size
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        z, p, lse = ctx.saved_tensors
        c = ctx.inv_s2
        bq, bp = _blocks(z.shape[0], p.shape[0], ctx.chunk_size)
        p_sq = (p * p).sum(1)
        rows = []
        for i in range(0, z.shape[0], bq):
            zi = z[i : i + bq]
            shift = (lse[i : i + bq] + c * (zi * zi).sum(1)).unsqueeze(1)
            w_sum = zi.new_zeros(zi.shape[0])
            w_p = torch.zeros_like(zi)
            for j in range(0, p.shape[0], bp):
                pj = p[j : j + bp]
                # w_ij = exp(-||z_i - p_j||^2 c - lse_i), out of place: differentiable again
                w = torch.exp(
                    torch.addmm(p_sq[j : j + bp].unsqueeze(0), zi, pj.T, beta=-c, alpha=2.0 * c)
                    - shift
                )
                w_sum = w_sum + w.sum(1)
                w_p = w_p + w @ pj
            rows.append((zi * w_sum.unsqueeze(1) - w_p) * (-2.0 * c))
        return torch.cat(rows) * grad_out.unsqueeze(1), None, None, None


# ------------------------------------------------------------------------------------- helpers
def threshold_at(clean_scores: Tensor, fpr: float) -> float:
    """Score threshold T at false-positive rate ``fpr`` on clean data: flag ``score > T``.

    T is the (floor(fpr * n) + 1)-th largest of the n clean scores, so exactly floor(fpr * n)
    clean scores lie strictly above it when there are no ties (at most that many with ties).
    ``fpr = 1`` gives -inf (everything flagged); ``fpr = 0`` the largest clean score.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    s = torch.as_tensor(clean_scores).detach().flatten().to("cpu", torch.float64)
    if s.numel() == 0:
        raise ValueError("threshold_at needs at least one clean score")
    if not torch.isfinite(s).all():
        raise ValueError("clean scores contain NaN or inf")
    allowed = math.floor(fpr * s.numel() + 1e-9)
    if allowed >= s.numel():
        return -math.inf
    return float(torch.sort(s, descending=True).values[allowed])


def _median_within_class_distance(points: Tensor, counts: Sequence[int]) -> float:
    """Median of the positive pairwise distances within each class (<= 256 points per class)."""
    dists = []
    start = 0
    for n in counts:
        q = points[start : start + min(n, _MEDIAN_POINTS)].double()
        start += n
        if q.shape[0] >= 2:
            iu = torch.triu_indices(q.shape[0], q.shape[0], offset=1, device=q.device)
            dists.append(torch.cdist(q, q)[iu[0], iu[1]])
    pooled = torch.cat(dists) if dists else points.new_zeros(0, dtype=torch.float64)
    pooled = pooled[pooled > 0]
    if pooled.numel() == 0:
        raise ValueError(
            "cannot derive a bandwidth grid: the kernel points of every class coincide; "
            "pass a fixed bandwidth or an explicit bandwidth_grid"
        )
    return float(pooled.median())


def _offsets(counts: Sequence[int]) -> list[int]:
    out = [0]
    for n in counts:
        out.append(out[-1] + n)
    return out


# -------------------------------------------------------------------------------------- module
class KDEDetector(Detector):
    """Per-class Gaussian KDE on embeddings; ``score`` = -log KDE_t(z), larger = more adversarial.

    Build with a :class:`KDEConfig` or its fields as keywords (``KDEDetector(bandwidth=1.0)``):
    the config holds every default and valid range (``bandwidth``: a positive sigma or ``"auto"``
    to select it at :meth:`fit` by held-out likelihood; the ``"auto"`` grid; ``holdout_fraction``;
    ``chunk_size``).

    Buffers (moved by ``.to``, saved in ``state_dict``): ``points`` [P, D] kernel points grouped
    by class, ``classes`` [K] sorted labels, ``counts`` [K] points per class, ``sigma`` [] float64.
    Shapes: embeddings [M, D] floating; classes [M] integer (normally the predicted class).
    """

    config_type = KDEConfig
    option = "kde"
    points: Tensor
    classes: Tensor
    counts: Tensor
    sigma: Tensor

    def __init__(self, config: KDEConfig | None = None, /, **params: Any) -> None:
        super().__init__()
        config = configured(KDEConfig, config, params)
        self.config = config
        self.bandwidth = config.bandwidth
        self.grid_min, self.grid_max, self.grid_size = (
            config.grid_min,
            config.grid_max,
            config.grid_size,
        )
        self.bandwidth_grid = (
            None
            if config.bandwidth_grid is None
            else sorted(float(s) for s in config.bandwidth_grid)
        )
        self.holdout_fraction = config.holdout_fraction
        self.chunk_size = config.chunk_size
        self.register_buffer("points", torch.zeros(0, 0))
        self.register_buffer("classes", torch.zeros(0, dtype=torch.long))
        self.register_buffer("counts", torch.zeros(0, dtype=torch.long))
        self.register_buffer("sigma", torch.tensor(math.nan, dtype=torch.float64))
        self.bandwidth_grid_: list[float] = []
        self.bandwidth_scores_: list[float] = []
        self.grid_edge_: str | None = None  # "low" | "high" when the selected sigma is on an edge
        self._counts: list[int] = []  # python copies: no device sync per call
        self._sigma = math.nan

    # ------------------------------------------------------------------------------- state
    @property
    def fitted(self) -> bool:
        return bool(self._counts)

    @property
    def bandwidth_(self) -> float:
        """The sigma in use (the fixed value or the selected one)."""
        self._check_fitted()
        return self._sigma

    def metrics(self) -> dict[str, float]:
        """Loggable numbers: ``kde/bandwidth`` (sigma), ``kde/kernel_points`` and, when sigma was
        selected, ``kde/heldout_loglik`` (best mean held-out normalized log-likelihood, nats)."""
        self._check_fitted()
        out = {keys.KDE_BANDWIDTH: self._sigma, keys.KDE_KERNEL_POINTS: float(sum(self._counts))}
        if self.bandwidth_scores_:
            out[keys.KDE_HELDOUT_LOGLIK] = max(self.bandwidth_scores_)
        return out

    def caveats(self) -> dict[str, tuple[str, str]]:
        """``{tag: (value, explanation)}`` for choices a reader should doubt: a bandwidth selected
        on the edge of its grid (tag ``kde/bandwidth_at_grid_edge``, value ``low`` or ``high``)
        may lie outside it."""
        self._check_fitted()
        if self.grid_edge_ is None:
            return {}
        grid = self.bandwidth_grid_
        return {
            keys.KDE_BANDWIDTH_EDGE_TAG: (
                self.grid_edge_,
                f"bandwidth {self._sigma:.4g} is the {self.grid_edge_} edge of its grid "
                f"[{grid[0]:.4g}, {grid[-1]:.4g}]: the best sigma may lie outside; widen "
                "defense.grid_min/grid_max",
            )
        }

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("KDEDetector is not fitted: call fit(embeddings, labels) first")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # fit() sizes the buffers: adopt the checkpoint's shapes before the copy.
        for name in ("points", "classes", "counts", "sigma"):
            if prefix + name in state_dict:
                cur = self._buffers[name]
                assert cur is not None
                self._buffers[name] = torch.empty(
                    state_dict[prefix + name].shape, dtype=cur.dtype, device=cur.device
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._counts = [int(c) for c in self.counts.tolist()]
        self._sigma = float(self.sigma)

    def extra_repr(self) -> str:
        if not self.fitted:
            return f"bandwidth={self.bandwidth!r}, unfitted"
        return (
            f"bandwidth_={self._sigma:.4g}, classes={len(self._counts)}, "
            f"points={self.points.shape[0]}, dim={self.points.shape[1]}"
        )

    # --------------------------------------------------------------------------------- fit
    def fit(
        self,
        embeddings: Tensor,
        labels: Tensor,
        per_class: int | None = None,
        generator: torch.Generator | None = None,
        held_out: tuple[Tensor, Tensor] | None = None,
    ) -> KDEDetector:
        """Keep min(per_class, N_c) embeddings of each class c and set or select the bandwidth.

        Args:
            embeddings: [N, D] clean training embeddings; stored (detached) on their device.
            labels: [N] integer labels (the true labels of the training samples).
            per_class: kernel points kept per class (default: the config's ``per_class``, 1000 as
                in the paper): a random subset when a class has more, drawn with ``generator``.
            generator: CPU ``torch.Generator`` for the subset and the held-out split (default:
                a fresh one seeded with 0, so ``fit`` is deterministic).
            held_out: optional ([H, D], [H]) clean embeddings and labels used only to select the
                ``"auto"`` bandwidth; every label must be a fitted class.
        Returns:
            self.
        """
        per_class = self.config.per_class if per_class is None else per_class
        if int(per_class) < 1:
            raise ValueError(f"per_class must be >= 1, got {per_class}")
        z, y = self._check_inputs(embeddings, labels, "embeddings", "labels")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        classes, counts = torch.unique(y.cpu(), sorted=True, return_counts=True)
        order = torch.argsort(y.cpu(), stable=True)
        kept, sel_kernel, sel_held = [], [], []
        start = 0
        for n_c in counts.tolist():
            idx = order[start : start + n_c][torch.randperm(n_c, generator=gen)]
            start += n_c
            k = min(n_c, int(per_class))
            kept.append(idx[:k])
            if n_c > k:  # leftovers: score them against the kept points
                sel_kernel.append(idx[:k])
                sel_held.append(idx[k : 2 * k])
            else:  # hold out a share of the class, scored against the rest of it
                n_h = min(n_c - 1, max(1, round(self.holdout_fraction * n_c)))
                sel_held.append(idx[:n_h])
                sel_kernel.append(idx[n_h:])
        dev = z.device
        self._counts = [len(k) for k in kept]
        self.points = z[torch.cat(kept).to(dev)].clone()
        self.classes = classes.to(dev)
        self.counts = torch.tensor(self._counts, dtype=torch.long, device=dev)
        self.bandwidth_grid_, self.bandwidth_scores_, self.grid_edge_ = [], [], None

        if self.bandwidth == "auto":
            if held_out is not None:
                hz, hy = self._check_inputs(*held_out, "held_out[0]", "held_out[1]")
                if hz.shape[1] != z.shape[1]:
                    raise ValueError(
                        f"held_out embeddings have dim {hz.shape[1]}, fitted ones {z.shape[1]}"
                    )
                kern, kern_counts = self.points, self._counts
                held_z, held_cls = hz.to(dev), self._class_index(hy)
            else:
                kern = z[torch.cat(sel_kernel).to(dev)]
                kern_counts = [len(k) for k in sel_kernel]
                held_z = z[torch.cat(sel_held).to(dev)]
                held_cls = torch.cat([torch.full((len(h),), i) for i, h in enumerate(sel_held)]).to(
                    dev
                )
            sigma = self._select_bandwidth(kern, kern_counts, held_z, held_cls)
        else:
            sigma = float(self.bandwidth)
        self.sigma = torch.tensor(sigma, dtype=torch.float64, device=dev)
        self._sigma = sigma
        return self

    @staticmethod
    def _check_inputs(z: Tensor, y: Tensor, zn: str, yn: str) -> tuple[Tensor, Tensor]:
        z, y = torch.as_tensor(z), torch.as_tensor(y)
        if z.dim() != 2 or z.shape[0] == 0 or z.shape[1] == 0:
            raise ValueError(f"{zn} must have shape [N, D] with N, D >= 1, got {tuple(z.shape)}")
        if not z.is_floating_point():
            raise ValueError(f"{zn} must be a floating tensor, got {z.dtype}")
        if y.shape != (z.shape[0],):
            raise ValueError(f"{yn} must have shape [{z.shape[0]}], got {tuple(y.shape)}")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"{yn} must be an integer tensor, got {y.dtype}")
        if not torch.isfinite(z).all():
            raise ValueError(f"{zn} contains NaN or inf")
        return z.detach(), y.long()

    def _select_bandwidth(
        self, kern: Tensor, kern_counts: list[int], held_z: Tensor, held_cls: Tensor
    ) -> float:
        """argmax over the grid of the mean held-out normalized log-likelihood (float64)."""
        if held_z.shape[0] == 0:
            raise ValueError(
                "bandwidth='auto' needs held-out data: give held_out or >= 2 samples in some class"
            )
        if self.bandwidth_grid is not None:
            grid = list(self.bandwidth_grid)
        else:
            med = _median_within_class_distance(kern, kern_counts)
            exps = torch.linspace(
                math.log10(self.grid_min),
                math.log10(self.grid_max),
                self.grid_size,
                dtype=torch.float64,
            )
            grid = [med * 10.0**e for e in exps.tolist()]
        dim = kern.shape[1]
        kern, held_z = kern.double(), held_z.double()
        total = torch.zeros(len(grid), dtype=torch.float64, device=kern.device)
        off = _offsets(kern_counts)
        with torch.no_grad():
            for k in range(len(kern_counts)):
                q = held_z[held_cls == k]
                if q.shape[0] == 0 or kern_counts[k] == 0:
                    continue
                p = kern[off[k] : off[k + 1]]
                center = p.mean(0)
                lse = _log_kernel_sums(
                    q - center, p - center, [1.0 / s**2 for s in grid], self.chunk_size
                )
                total += (lse - math.log(p.shape[0])).sum(0)
        norm = [-dim * math.log(s) - 0.5 * dim * math.log(math.pi) for s in grid]
        scores = [t / held_z.shape[0] + c for t, c in zip(total.tolist(), norm, strict=True)]
        best = max(range(len(grid)), key=scores.__getitem__)
        self.bandwidth_grid_, self.bandwidth_scores_ = grid, scores
        if len(grid) > 1 and best in (0, len(grid) - 1):
            self.grid_edge_ = "low" if best == 0 else "high"
            warnings.warn(
                f"KDE bandwidth {grid[best]:.4g} is on the edge of the grid "
                f"[{grid[0]:.4g}, {grid[-1]:.4g}]; "
                "widen grid_min/grid_max or pass bandwidth_grid",
                RuntimeWarning,
                stacklevel=3,
            )
        log.info(
            "KDE bandwidth sigma=%.4g: held-out mean log-likelihood %.4f nats over %d samples "
            "(grid %.4g..%.4g, %d values)",
            grid[best],
            scores[best],
            held_z.shape[0],
            grid[0],
            grid[-1],
            len(grid),
        )
        return float(grid[best])

    # ----------------------------------------------------------------------------- scoring
    def _class_index(self, classes: Tensor) -> Tensor:
        """Class labels -> indices into ``self.classes``; labels that were not fitted raise."""
        classes = torch.as_tensor(classes, device=self.classes.device)
        if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
            raise ValueError(f"classes must be an integer tensor, got {classes.dtype}")
        classes = classes.long()
        idx = torch.searchsorted(self.classes, classes).clamp_(max=len(self._counts) - 1)
        bad = self.classes[idx] != classes
        if bool(bad.any()):
            raise ValueError(
                f"classes {sorted(set(classes[bad].tolist()))} were not fitted "
                f"(fitted: {self.classes.tolist()})"
            )
        return idx

    def log_density(
        self,
        embeddings: Tensor,
        classes: Tensor,
        *,
        normalized: bool = False,
        bandwidth: float | None = None,
    ) -> Tensor:
        """log KDE_t(z) of each row z under the kernel points of its class t.

        Args:
            embeddings: [M, D] floating, any device (moved to the points' device); differentiable.
            classes: [M] integer labels (normally the model's predicted classes).
            normalized: add -D log(sigma) - (D/2) log(pi), giving a log probability density
                (= sklearn ``KernelDensity(bandwidth=sigma/sqrt(2)).score_samples``).
            bandwidth: a sigma to use instead of ``bandwidth_`` (analysis).
        Returns:
            [M] on the points' device, dtype promoted from embeddings and points.
        """
        self._check_fitted()
        sigma = self._sigma if bandwidth is None else float(bandwidth)
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"bandwidth must be a positive float, got {bandwidth!r}")
        z = torch.as_tensor(embeddings)
        dim = self.points.shape[1]
        if z.dim() != 2 or z.shape[1] != dim or not z.is_floating_point():
            raise ValueError(
                f"embeddings must be floating with shape [M, {dim}], got {z.dtype} {tuple(z.shape)}"
            )
        if torch.as_tensor(classes).shape != (z.shape[0],):
            raise ValueError(
                f"classes must have shape [{z.shape[0]}], "
                f"got {tuple(torch.as_tensor(classes).shape)}"
            )
        dtype = torch.promote_types(z.dtype, self.points.dtype)
        z = z.to(device=self.points.device, dtype=dtype)
        if z.shape[0] == 0:
            return z.sum(1)
        cls = self._class_index(classes)
        backoff = None  # built on the first out-of-memory error only (C&W-wb calls this a lot)
        while True:
            try:
                out = self._grouped_log_kernel_sums(z, cls, sigma, dtype)
                break
            except torch.OutOfMemoryError as error:
                backoff = backoff or MemoryBackoff(
                    "KDE scoring blocks", self.chunk_size, console.print, floor=MIN_CHUNK_SIZE
                )
                self.chunk_size = backoff.shrink(error)  # smaller blocks, same values
        if normalized:
            out = out - (dim * math.log(sigma) + 0.5 * dim * math.log(math.pi))
        return out

    def _grouped_log_kernel_sums(
        self, z: Tensor, cls: Tensor, sigma: float, dtype: torch.dtype
    ) -> Tensor:
        """log KDE of each row of ``z`` under the points of its class index ``cls`` (unnormalized):
        queries grouped by class, each group against its class's points, block by block."""
        order = torch.argsort(cls, stable=True)
        q_counts = torch.bincount(cls, minlength=len(self._counts)).tolist()
        zs = z.index_select(0, order)
        pieces = []
        off = _offsets(self._counts)
        q0 = 0
        for k, n_q in enumerate(q_counts):
            if n_q:
                p = self.points[off[k] : off[k + 1]].to(dtype)
                center = p.mean(0)
                lse = _LogKernelSum.apply(
                    zs[q0 : q0 + n_q] - center, p - center, 1.0 / sigma**2, self.chunk_size
                )
                pieces.append(lse - math.log(p.shape[0]))
            q0 += n_q
        return torch.cat(pieces).index_select(0, torch.argsort(order))

    def score(self, embeddings: Tensor, predicted_classes: Tensor) -> Tensor:
        """Adversarial-ness -log KDE_t(z) under the predicted class t, [M]; larger = more
        adversarial."""
        return -self.log_density(embeddings, predicted_classes)

    def forward(self, embeddings: Tensor, predicted_classes: Tensor) -> Tensor:
        """Same as :meth:`score`."""
        return self.score(embeddings, predicted_classes)

    # ------------------------------------------------------------------------------- Detector
    def fit_on(self, inputs: FitInputs) -> KDEDetector:
        """Fit on the training split's clean embeddings; the validation split (when not empty)
        is the held-out data of the ``"auto"`` bandwidth."""
        data = inputs.data
        held_out = (inputs.outputs.split("val").embeddings, data.y_val) if len(data.y_val) else None
        train = inputs.layers("train", ("embedding",))["embedding"]
        return self.fit(train, data.y_train, generator=inputs.generator, held_out=held_out)

    def score_probe(self, probe: Probe, classes: Tensor) -> Tensor:
        """:meth:`score` of the probe's embeddings."""
        return self.score(probe.embedding, classes)

    @staticmethod
    def threshold_at(clean_scores: Tensor, fpr: float) -> float:
        """Threshold on :meth:`score` flagging a fraction ``fpr`` of clean inputs
        (:func:`threshold_at`)."""
        return threshold_at(clean_scores, fpr)
