"""Attack throughput: robustctl.attacks against torchattacks, same model, batch and device, one run.

    .venv/bin/python benchmarks/bench_attacks.py --quick          # < 2 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_attacks.py --device cuda    # ResNet-20 on 3x32x32, batch 128

Reference: torchattacks (its version is printed) for every attack it has; for JSMA, which
torchattacks gained only in 3.5 (that release pins an old requests, so the dev extra stays below
it), ART's SaliencyMapMethod. All sides attack the same briefly trained ResNet (on robustctl's
synthetic data of the chosen shape) through the same logits module, with the same parameters:

    fgsm      eps 0.1
    bim       eps 0.1, alpha 0.01, 10 steps
    pgd       eps 0.1, alpha 0.025, 10 steps, random start
    cw        one c (1.0), --cw-steps Adam steps at lr 0.01 (torchattacks has no binary search,
              so ours runs binary_steps=1 without early abort: the same number of
              forward/backward passes; torchattacks may still stop early when its loss rises)
    deepfool  50 steps, overshoot 0.02
    jsma      theta 1, gamma 0.1, target (y + 1) mod K on both sides
    apgd      APGD-CE, eps --aa-eps, --aa-steps iterations, 1 restart
    apgd-t    APGD-T (targeted DLR), eps --aa-eps, --aa-steps iterations, 9 target classes
    square    Square (margin loss), eps --aa-eps, --aa-queries queries, p_init 0.8
    hsj       HopSkipJump L2, --hsj-steps iterations, 100 -> 10,000 probes, gamma 0.01 d (ART's
              theta); the reference is ART's HopSkipJump, which attacks one image at a time
    autoattack  the standard ensemble, worst case per point: APGD-CE, APGD-T, FAB-T (9 targets),
              Square, at --aa-steps / --aa-queries (full: the authors' 100 / 5000); ours is
              robustctl.evaluation.robust_accuracy.run_ensemble, theirs torchattacks' MultiAttack
              of its APGD, APGDT, FAB (multi-targeted) and Square built with the same settings
              (torchattacks' own AutoAttack class fixes 10 iterations per gradient attack, not the
              authors' 100), both running each attack only on the points still robust.

For apgd, apgd-t, square and autoattack the success column is the attack success rate, so 1 minus
it is the robust accuracy (a clean-misclassified point counts as broken on both sides).

Printed: images/second of each (batch size / median wall time of up to --repeats rounds, fewer once
--budget seconds are spent, after one warm-up run of FGSM), the ratio ours/theirs (> 1: ours faster)
as the median over rounds of time_theirs / time_ours, where a round runs both sides back to back in
alternating order (so a busy shared machine slows both alike), and each side's success rate, so that
the speed is compared at comparable work. Ours always ends with one more forward pass, the success
re-check on the returned batch; the references return images only, so by default they are timed with
the same re-check added (--images-only drops it). ART's JSMA changes the two features with the
largest target-class gradient each step, a cheaper search than Papernot's pairwise saliency that
ours (and torchattacks') computes, so the JSMA ratio understates the like-for-like gain.
Timings depend on the machine; state it with the numbers.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable

import torch
from common import write_record
from torch import Tensor, nn

from robustctl.attacks import build
from robustctl.data import SyntheticDatasetConfig
from robustctl.data.synthetic import load_synthetic_split
from robustctl.models import PredictionView, ResNet


# ------------------------------------------------------------------------------- settings
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="ResNet-8 on 1x16x16, batch 32, 9 rounds, 1 thread (< 2 min on 2 CPU cores)",
    )
    p.add_argument(
        "--device", default="auto", help="auto | cpu | cuda (default: cuda when available)"
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="images per attack call (quick 32, full 128)"
    )
    p.add_argument("--depth", type=int, default=None, help="ResNet depth 6n+2 (quick 8, full 20)")
    p.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=None,
        metavar=("C", "H", "W"),
        help="image shape (quick 1 16 16, full 3 32 32)",
    )
    p.add_argument(
        "--images-only",
        action="store_true",
        help="time torchattacks without the success-mask prediction ours includes",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per attack (quick 9, full 5); medians are reported",
    )
    p.add_argument(
        "--cw-steps",
        type=int,
        default=None,
        help="Adam steps of the C&W comparison (quick 20, full 100)",
    )
    p.add_argument(
        "--attacks",
        nargs="+",
        default=[
            "fgsm",
            "bim",
            "pgd",
            "cw",
            "deepfool",
            "jsma",
            "apgd",
            "apgd-t",
            "square",
            "hsj",
            "autoattack",
        ],
    )
    p.add_argument(
        "--hsj-steps",
        type=int,
        default=None,
        help="HopSkipJump iterations on both sides (quick 5, full 20)",
    )
    p.add_argument(
        "--aa-eps",
        type=float,
        default=0.05,
        help="Linf budget of apgd, apgd-t, square and autoattack (default 0.05)",
    )
    p.add_argument(
        "--aa-steps",
        type=int,
        default=None,
        help="iterations per APGD/FAB run (quick 20, full the authors' 100)",
    )
    p.add_argument(
        "--aa-queries",
        type=int,
        default=None,
        help="Square's query budget (quick 300, full the authors' 5000)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (quick 1, else torch's default)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds after which an attack stops repeating (quick 4, full 60)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="record path (default reports/bench/...)")
    args = p.parse_args()
    quick = args.quick
    args.batch_size = args.batch_size or (32 if quick else 128)
    args.depth = args.depth or (8 if quick else 20)
    args.shape = tuple(args.shape or ((1, 16, 16) if quick else (3, 32, 32)))
    args.repeats = args.repeats or (9 if quick else 5)
    args.threads = args.threads or (
        1 if quick else None
    )  # tiny tensors: extra threads only add contention
    args.cw_steps = args.cw_steps or (20 if quick else 100)
    args.budget = args.budget or (4.0 if quick else 60.0)
    args.aa_steps = args.aa_steps or (20 if quick else 100)
    args.aa_queries = args.aa_queries or (300 if quick else 5000)
    args.hsj_steps = args.hsj_steps or (5 if quick else 20)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


# ---------------------------------------------------------------------------- model and data
def make_model_and_batch(args: argparse.Namespace) -> tuple[nn.Module, Tensor, Tensor]:
    c, h, _ = args.shape
    cfg = SyntheticDatasetConfig(
        name="synthetic",
        num_samples=1024 + args.batch_size,
        num_classes=10,
        channels=c,
        image_size=h,
        noise=0.3,
        split_seed=args.seed,
        test_fraction=args.batch_size / (1024 + args.batch_size),
    )
    raw = load_synthetic_split(cfg, ".")
    torch.manual_seed(args.seed)
    model = ResNet(depth=args.depth, num_classes=10, in_channels=c).to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x_train, y_train = raw.x_train.to(args.device), raw.y_train.to(args.device)
    for start in range(0, len(y_train), 64):  # one epoch: enough to make the attacks non-trivial
        loss = nn.functional.cross_entropy(
            model.predict_logits(x_train[start : start + 64]), y_train[start : start + 64]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return (
        PredictionView(model),
        raw.x_test[: args.batch_size].to(args.device),
        raw.y_test[: args.batch_size].to(args.device),
    )


# ---------------------------------------------------------------------------------- the pairs
def pairs(
    args: argparse.Namespace, model: nn.Module, y: Tensor
) -> dict[str, tuple[Callable, Callable | None]]:
    """name -> (ours(x, y) -> x_adv, theirs(x, y) -> x_adv or None when torchattacks lacks it)."""
    import torchattacks as ta

    target = (y + 1) % 10

    def ours(name: str, **kw) -> Callable:
        attack = build(name, model, **kw)
        return lambda x, y: attack(x, y).x_adv

    def ours_targeted(name: str, **kw) -> Callable:
        attack = build(name, model, **kw)
        return lambda x, y: attack(x, y, target=target).x_adv

    table = {
        "fgsm": (ours("fgsm", eps=0.1), ta.FGSM(model, eps=0.1)),
        "bim": (
            ours("bim", eps=0.1, alpha=0.01, steps=10),
            ta.BIM(model, eps=0.1, alpha=0.01, steps=10),
        ),
        "pgd": (
            ours("pgd", eps=0.1, alpha=0.025, steps=10, random_start=True),
            ta.PGD(model, eps=0.1, alpha=0.025, steps=10, random_start=True),
        ),
        "cw": (
            ours("cw", binary_steps=1, steps=args.cw_steps, c_init=1.0, lr=0.01, abort_early=False),
            ta.CW(model, c=1.0, kappa=0, steps=args.cw_steps, lr=0.01),
        ),
        "deepfool": (
            ours("deepfool", steps=50, overshoot=0.02),
            ta.DeepFool(model, steps=50, overshoot=0.02),
        ),
        "jsma": (
            ours_targeted("jsma", steps=10**6, gamma=0.1, theta=1.0),
            ta.JSMA(model, theta=1.0, gamma=0.1)
            if hasattr(ta, "JSMA")
            else art_jsma(model, args.shape, target),
        ),
    }
    table.update(autoattack_pairs(args, model))
    d = math.prod(args.shape)
    table["hsj"] = (
        ours("hsj", steps=args.hsj_steps, queries=10**9, gamma=0.01 * d),
        art_hop_skip_jump(model, args.shape, args.hsj_steps),
    )
    if not args.images_only:
        table = {
            name: (mine, with_success_mask(model, theirs)) for name, (mine, theirs) in table.items()
        }
    return {name: table[name] for name in args.attacks}


def autoattack_pairs(
    args: argparse.Namespace, model: nn.Module
) -> dict[str, tuple[Callable, Callable]]:
    """APGD-CE, APGD-T, Square and the standard AutoAttack ensemble, ours and torchattacks' at the
    same eps, iterations, targets and queries (torchattacks draws from the global RNG, ours from the
    attack's seed: runs agree in distribution, not image for image)."""
    import torchattacks as ta

    from robustctl.evaluation.robust_accuracy import ensemble, run_ensemble

    eps, steps, queries = args.aa_eps, args.aa_steps, args.aa_queries
    n_targets = 9

    def ours(name: str, **kw) -> Callable:
        attack = build(name, model, eps=eps, **kw)
        return lambda x, y: attack(x, y).x_adv

    members = ensemble(
        "standard",
        {
            "apgd-ce": {"steps": steps},
            "apgd-t": {"steps": steps, "n_target_classes": n_targets},
            "fab-t": {"steps": steps, "n_target_classes": n_targets},
            "square": {"queries": queries},
        },
    )

    def ours_ensemble(x: Tensor, y: Tensor) -> Tensor:
        result = run_ensemble(model, x, y, members, eps, "linf", len(x), args.seed, False)
        return result.x_adv.to(x.device)

    def theirs_apgd() -> nn.Module:
        return ta.APGD(model, eps=eps, steps=steps, loss="ce", n_restarts=1)

    def theirs_apgdt() -> nn.Module:
        return ta.APGDT(model, eps=eps, steps=steps, n_classes=n_targets + 1, n_restarts=1)

    def theirs_square() -> nn.Module:
        return ta.Square(model, eps=eps, n_queries=queries, p_init=0.8, n_restarts=1)

    theirs_ensemble = ta.MultiAttack(
        [
            theirs_apgd(),
            theirs_apgdt(),
            ta.FAB(model, eps=eps, steps=steps, multi_targeted=True, n_classes=n_targets + 1),
            theirs_square(),
        ]
    )
    return {
        "apgd": (ours("apgd", steps=steps, loss="ce"), theirs_apgd()),
        "apgd-t": (ours("apgd_t", steps=steps, n_target_classes=n_targets), theirs_apgdt()),
        "square": (ours("square", queries=queries), theirs_square()),
        "autoattack": (ours_ensemble, theirs_ensemble),
    }


def art_jsma(model: nn.Module, shape: tuple[int, ...], target: Tensor) -> Callable | None:
    """ART's SaliencyMapMethod (theta 1, gamma 0.1, same targets), the JSMA reference when the
    installed torchattacks has none (JSMA arrived in torchattacks 3.5, which pins an old requests).
    ART works on numpy arrays, so its timing includes the host round trip (on CPU a copy-free
    view)."""
    try:
        from art.attacks.evasion import SaliencyMapMethod
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        return None
    device = next(model.parameters()).device
    classifier = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(shape),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )
    one_hot = torch.nn.functional.one_hot(target, 10).cpu().numpy()

    def run(x: Tensor, y: Tensor) -> Tensor:
        attack = SaliencyMapMethod(
            classifier, theta=1.0, gamma=0.1, batch_size=len(x), verbose=False
        )
        return torch.from_numpy(attack.generate(x.cpu().numpy(), y=one_hot)).to(x.device)

    return run


def art_hop_skip_jump(model: nn.Module, shape: tuple[int, ...], steps: int) -> Callable | None:
    """ART's HopSkipJump (L2, ``steps`` iterations, 100 -> 10,000 probes), one image at a time
    as ART runs it; float64 arrays from its interpolations are cast to float32 for the model."""
    try:
        from art.attacks.evasion import HopSkipJump
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        return None

    class Float32(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x: Tensor) -> Tensor:
            return self.inner(x.float())

    device = next(model.parameters()).device
    classifier = PyTorchClassifier(
        model=Float32(model),
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(shape),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )
    attack = HopSkipJump(classifier, norm=2, max_iter=steps, max_eval=10_000, init_eval=100)
    attack.verbose = False

    def run(x: Tensor, y: Tensor) -> Tensor:
        return torch.from_numpy(attack.generate(x.cpu().numpy())).float().to(x.device)

    return run


def reference_name(name: str) -> str:
    import torchattacks as ta

    if name == "hsj":
        import art

        return f"ART {art.__version__}"
    if name == "jsma" and not hasattr(ta, "JSMA"):
        import art

        return f"ART {art.__version__}"
    return f"torchattacks {ta.__version__}"


def with_success_mask(model: nn.Module, attack: Callable | None) -> Callable | None:
    """torchattacks returns images only; an evaluation also needs the per-sample success mask, which
    ours returns (one prediction on x_adv). Timing both with it compares equal work."""
    if attack is None:
        return None

    def run(x: Tensor, y: Tensor) -> Tensor:
        adv = attack(x, y)
        with torch.no_grad():
            _ = model(adv).argmax(1) != y
        return adv

    return run


# ------------------------------------------------------------------------------------ timing
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_once(fn: Callable, x: Tensor, y: Tensor, device: str) -> tuple[float, Tensor]:
    sync(device)
    t0 = time.perf_counter()
    out = fn(x, y)
    sync(device)
    return time.perf_counter() - t0, out


def timed_pair(
    ours: Callable,
    theirs: Callable | None,
    x: Tensor,
    y: Tensor,
    repeats: int,
    device: str,
    budget_s: float,
) -> tuple[float, float | None, float | None, Tensor, Tensor | None]:
    """Interleaved timing: each round runs ours then theirs (the order alternating between rounds),
    so load from other processes on a shared machine hits both sides alike. Stops after ``repeats``
    rounds or once ``budget_s`` is spent (at least one round).

    Returns (median time ours, median time theirs, median of the per-round ratios theirs/ours,
    last outputs). The per-round ratio is the robust figure: both sides of a round ran under the
    same load.
    """
    fns = {"ours": ours, "theirs": theirs}
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    last: dict[str, Tensor | None] = {"ours": x, "theirs": None}
    for r in range(repeats):
        for side in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
            if fns[side] is not None:
                dt, last[side] = run_once(fns[side], x, y, device)
                times[side].append(dt)
        if sum(times["ours"]) + sum(times["theirs"]) > budget_s:
            break
    t_ours, t_theirs = times["ours"], times["theirs"]
    adv_ours, adv_theirs = last["ours"], last["theirs"]
    if not t_theirs:
        return statistics.median(t_ours), None, None, adv_ours, None
    ratio = statistics.median(b / a for a, b in zip(t_ours, t_theirs, strict=True))
    return statistics.median(t_ours), statistics.median(t_theirs), ratio, adv_ours, adv_theirs


@torch.no_grad()
def success_rate(model: nn.Module, x_adv: Tensor, y: Tensor) -> float:
    return float((model(x_adv).argmax(1) != y).float().mean())


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import torchattacks

    started = time.perf_counter()
    model, x, y = make_model_and_batch(args)
    device_name = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine()
    )
    print(
        f"robustctl attacks vs torchattacks {torchattacks.__version__} | "
        f"torch {torch.__version__} | {args.device} ({device_name}, "
        f"{torch.get_num_threads()} threads) | ResNet-{args.depth} on "
        f"{'x'.join(map(str, args.shape))}, batch {args.batch_size}, {args.repeats} round(s)"
    )
    table = pairs(args, model, y)
    warm_up = table.get("fgsm", next(iter(table.values())))[0]
    run_once(warm_up, x, y, args.device)
    rows = []
    for name, (ours, theirs) in table.items():
        t_ours, t_theirs, ratio, adv_ours, adv_theirs = timed_pair(
            ours, theirs, x, y, args.repeats, args.device, args.budget
        )
        row = [
            name,
            len(x) / t_ours,
            None if t_theirs is None else len(x) / t_theirs,
            ratio,
            success_rate(model, adv_ours, y),
            None if adv_theirs is None else success_rate(model, adv_theirs, y),
        ]
        rows.append(row)
        print(f"  {name}: done ({time.perf_counter() - started:.0f}s)", flush=True)

    def fmt(v: float | None, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    print(
        f"\napgd / apgd-t / square / autoattack: eps {args.aa_eps}, {args.aa_steps} iterations, "
        f"{args.aa_queries} queries"
    )
    print(
        f"\n{'attack':<12}{'ours img/s':>12}{'reference img/s':>17}{'ratio ours/theirs':>19}"
        f"{'success ours':>14}{'success theirs':>16}  reference"
    )
    for name, ours_ips, theirs_ips, ratio, s_ours, s_theirs in rows:
        print(
            f"{name:<12}{fmt(ours_ips, '.1f'):>12}{fmt(theirs_ips, '.1f'):>17}"
            f"{fmt(ratio, '.2f'):>19}{fmt(s_ours, '.1%'):>14}"
            f"{fmt(s_theirs, '.1%'):>16}  {reference_name(name)}"
        )
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    columns = ("ours_images_per_s", "reference_images_per_s", "ratio", "success_ours")
    record = {
        row[0]: dict(zip((*columns, "success_reference"), row[1:], strict=True))
        | {"reference": reference_name(row[0])}
        for row in rows
    }
    write_record("bench_attacks", {**vars(args), "device": args.device}, record, args.json)


if __name__ == "__main__":
    main()
