"""Shared helpers of the benchmark scripts: environment report, timing, tables."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

# Run from a checkout without installing: make ``import wszoo`` find the repository's copy.
_REPO = str(Path(__file__).resolve().parent.parent)
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)


def print_environment(extra: dict | None = None) -> None:
    """Prints what the figures depend on: versions, threads, device."""
    import torch

    rows = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch threads": torch.get_num_threads(),
        "cpu count": os.cpu_count(),
        "device": "cpu",
        "processor": _cpu_name(),
        "load average": _load_average(),
    }
    rows.update(extra or {})
    print("== environment ==")
    for key, value in rows.items():
        print(f"  {key:<16} {value}")
    print()


def _load_average() -> str:
    # Other processes on the machine skew wall-clock figures; say how busy it was.
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1/5/15 min)"
    except OSError:
        return "unknown"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (wall clock)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Prints a plain aligned table."""
    text = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(text[0], widths)))
    print(line)
    for row in text[1:]:
        print("  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths)))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _numeric(text: str) -> bool:
    try:
        float(text.rstrip("x%"))
        return True
    except ValueError:
        return False


def parse_size(text: str) -> tuple[int, int]:
    """An argparse type for ``HxW`` sizes, e.g. ``512x768``."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 512x768, got {text!r}") from None
    return height, width


def agreement(reference: list[dict], candidate: list[dict]) -> float:
    """Fraction of the reference detections matched (same label, IoU >= 0.9)."""
    from torchvision.ops import box_iou

    matched = total = 0
    for ref, cand in zip(reference, candidate):
        total += len(ref["boxes"])
        if len(ref["boxes"]) == 0 or len(cand["boxes"]) == 0:
            continue
        iou = box_iou(ref["boxes"].float().cpu(), cand["boxes"].float().cpu())
        same = ref["labels"].cpu()[:, None] == cand["labels"].cpu()[None, :]
        matched += int(((iou >= 0.9) & same).any(dim=1).sum())
    return matched / total if total else 1.0
