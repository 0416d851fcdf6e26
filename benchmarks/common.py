"""What every benchmark shares: the machine's name, device syncs, and the JSON record.

Each benchmark prints a table and writes the same numbers with its settings and machine to
``reports/bench/<benchmark>.json`` (``--json PATH`` elsewhere), so a README figure can be traced
to the run that produced it.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_DIR = Path("reports/bench")


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work, so a wall-clock interval covers it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device | str) -> dict[str, Any]:
    """The device's name, the CPU threads and the library versions, for the record."""
    device = torch.device(device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine()
    )
    return {
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write_record(name: str, settings: dict[str, Any], results: Any, path: str | None) -> Path:
    """Write ``{"benchmark", "when", "machine", "settings", "results"}`` as JSON; returns the
    path (``reports/bench/<name>.json`` by default)."""
    out = Path(path) if path else DEFAULT_DIR / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(settings.get("device", "cpu")),
        "settings": settings,
        "results": results,
    }
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return out


def train_digits_resnet8(data: Any, epochs: int, seed: int) -> torch.nn.Module:
    """A ResNet-8 (width 8) trained with Adam 3e-3 in batches of 64 on ``data``'s 8x8 digits
    training split, in eval mode (about 98% test accuracy at 6 epochs): the small model the
    attack and detector benchmarks measure on."""
    from robustctl.models import ResNet

    torch.manual_seed(seed)
    model = ResNet(depth=8, num_classes=10, in_channels=1, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data.y_train), generator=g)
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            logits = model.predict_logits(data.x_train[idx])
            loss = torch.nn.functional.cross_entropy(logits, data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
