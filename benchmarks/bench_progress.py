"""Cost of the long attacks' step/iteration progress bars (C&W-hc, JSMA), timed three ways.

    .venv/bin/python benchmarks/bench_progress.py                  # ~1-2 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_progress.py --device cuda --batch-size 128 --shape 3 32 32

- "none": no progress display (piped output): the attack's progress calls return at once;
- "outer": inside a running display (the attack runner's batch bar) with the attack's own
  step/iteration task switched off (``loop_progress = False``), i.e. the display before the
  iteration bars existed;
- "inner": the same display with the attack's task on, updated while it runs.

The display is on an interactive console that renders into a buffer (its refresh thread draws 10
times a second, as in a terminal). All sides attack the same untrained ResNet on the same random
batch with the same settings (C&W-hc without early abort, so each does the same iterations), in
rounds that run the three back to back, the order rotating per round; printed: the median seconds
of each, the medians over rounds of time_inner / time_outer (the slowdown the iteration bar adds;
1.00x: none) and time_inner / time_none (the whole display's), and, for a busy shared machine
where other work only ever adds time, the same ratio of each side's fastest round ("best").
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import torch
from common import sync, write_record
from rich.console import Console

from robustctl.attacks import build
from robustctl.console import progress
from robustctl.models import ResNet


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--depth", type=int, default=8, help="ResNet depth 6n+2")
    p.add_argument("--shape", type=int, nargs=3, default=(1, 16, 16), metavar=("C", "H", "W"))
    p.add_argument("--binary-steps", type=int, default=2, help="C&W-hc binary steps")
    p.add_argument("--cw-steps", type=int, default=100, help="C&W-hc iterations per binary step")
    p.add_argument("--jsma-steps", type=int, default=20, help="JSMA iterations (gamma 1)")
    p.add_argument("--rounds", type=int, default=9, help="timed rounds per attack")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="record path (default reports/bench/...)")
    return p.parse_args()


def timed(run: Callable[[], object], device: str) -> float:
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - start


def in_display(run: Callable[[], object]) -> Callable[[], object]:
    """``run`` inside a live progress display on an interactive console (into a buffer)."""
    terminal = Console(file=io.StringIO(), force_terminal=True, force_interactive=True, width=120)

    def shown() -> object:
        with progress(terminal) as bar:
            bar.add_task("batches", total=1, status="")
            return run()

    return shown


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    c, h, w = args.shape
    model = ResNet(depth=args.depth, num_classes=10, in_channels=c).to(args.device).eval()
    x = torch.rand(args.batch_size, c, h, w, device=args.device)
    y = torch.randint(0, 10, (args.batch_size,), device=args.device)
    settings = {
        "cw_hc": {"binary_steps": args.binary_steps, "steps": args.cw_steps, "abort_early": False},
        "jsma": {"steps": args.jsma_steps, "gamma": 1.0},
    }
    results = {}
    header = ("none s", "outer s", "inner s")
    print(
        f"{'attack':8} "
        + " ".join(f"{h:>8}" for h in header)
        + "  inner/outer  inner/none  best inner/outer"
    )
    for name, params in settings.items():
        quiet = build(name, model, **params)
        quiet.loop_progress = False  # the display shows the batch bar only
        loud = build(name, model, **params)
        sides = {
            "none": lambda a=loud: a(x, y),
            "outer": in_display(lambda a=quiet: a(x, y)),
            "inner": in_display(lambda a=loud: a(x, y)),
        }
        sides["inner"]()  # warm-up
        times: dict[str, list[float]] = {side: [] for side in sides}
        over_outer, over_none = [], []
        order = list(sides)
        for r in range(args.rounds):
            for side in order[r % 3 :] + order[: r % 3]:
                times[side].append(timed(sides[side], args.device))
            over_outer.append(times["inner"][-1] / times["outer"][-1])
            over_none.append(times["inner"][-1] / times["none"][-1])
        medians = {side: statistics.median(t) for side, t in times.items()}
        results[name] = {
            **{f"{side}_s": m for side, m in medians.items()},
            "inner_over_outer": statistics.median(over_outer),
            "inner_over_none": statistics.median(over_none),
            "best_inner_over_outer": min(times["inner"]) / min(times["outer"]),
            "rounds": times,
        }
        r = results[name]
        print(
            f"{name:8} {medians['none']:8.3f} {medians['outer']:8.3f} {medians['inner']:8.3f}"
            f" {r['inner_over_outer']:11.3f}x {r['inner_over_none']:10.3f}x"
            f" {r['best_inner_over_outer']:16.3f}x"
        )
    print(
        "iteration-bar slowdown (inner / outer, median; best): "
        + ", ".join(
            f"{name} {r['inner_over_outer']:.3f}x; {r['best_inner_over_outer']:.3f}x"
            for name, r in results.items()
        )
    )
    write_record("bench_progress", vars(args), results, args.json)


if __name__ == "__main__":
    main()
