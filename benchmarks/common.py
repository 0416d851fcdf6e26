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
