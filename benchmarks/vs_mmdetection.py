#!/usr/bin/env python
"""wszoo against MMDetection 3.3 end to end, on the same weights and the same photograph.

Needs the parity environment (``parity/mmdet_parity.py`` says how to set it up); run from the
repository root::

    PYTHONPATH=. /work/mmdet_venv/bin/python benchmarks/vs_mmdetection.py
    PYTHONPATH=. /work/mmdet_venv/bin/python benchmarks/vs_mmdetection.py --variants mask_r50_2x --size 1280x1920

Per variant it builds MMDetection's detector from its own config with deterministic random
weights that give many detections (``parity.mmdet_parity.prepare_variant``), converts them into
wszoo's model, and times, interleaved (medians over rounds, the same torch thread count):

* ``mmdet``: ``mmdet.apis.inference_detector`` on the BGR image (its test pipeline, model,
  and binary masks at the image's size);
* ``wszoo``: the wszoo model on the RGB image as ``wszoo.Predictor`` and ``wszoo predict``
  build it (``mask_format="bool"``: MMDetection's binary masks, the output compared);
* ``wszoo probs``: the same with the default ``mask_format="probs"`` (torchvision's float masks);
* ``wszoo channels_last``: the ``wszoo`` run with the model in ``torch.channels_last`` (still
  float32; its convolutions round differently from MMDetection's NCHW ones, so detections agree
  up to float rounding rather than bit for bit).

The runs go in a new (seeded) random order every round. It prints seconds per image,
the ratio of medians to MMDetection and the median of the per-round ratios (each round's runs
are neighbours in time, so this one is the less exposed to the machine's drifting speed), the
peak resident memory one forward adds
(Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``; not meaningful on a GPU),
and the detections' agreement with MMDetection's: the fraction of its detections matched by one
of the same label at IoU >= 0.9, and row by row (count, labels, max |Δbox|, max |Δscore|, mask
pixels that differ).
The photograph is scikit-image's astronaut resized to ``--size`` (the test pipeline then
resizes it to the configs' 1333x800). ``--retain-freed-memory`` first applies
``wszoo.inference.allocator.retain_freed_memory`` (as ``wszoo predict`` does on the CPU); it is
process-wide, so MMDetection runs with it too. ``--as-shipped`` compares the two as they ship
instead, each in its own processes taking turns (``--rounds`` processes per side, ``--repeats``
forwards each after a warm-up): MMDetection with the default allocator, wszoo with the retained
one (what ``wszoo predict`` and ``wszoo eval`` set on the CPU).

    PYTHONPATH=. /work/mmdet_venv/bin/python benchmarks/vs_mmdetection.py --rounds 5 --retain-freed-memory
    PYTHONPATH=. /work/mmdet_venv/bin/python benchmarks/vs_mmdetection.py --as-shipped --rounds 4
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import agreement, median, parse_size, print_environment, print_table


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_added_mib(fn) -> float:
    """Peak resident memory (MiB) that ``fn()`` adds over the resident memory before it."""
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def _wszoo_run(model, image: torch.Tensor, mask_format: str):
    def run() -> dict:
        if model.roi_heads.has_mask():
            model.roi_heads.mask_format = mask_format
        with torch.inference_mode():
            out = model([image])[0]
        if "masks" in out and out["masks"].dtype != torch.bool:
            out["masks"] = out["masks"][:, 0] >= 0.5
        return out

    return run


def compare_variant(variant: str, rgb: np.ndarray, rounds: int) -> None:
    """Times and compares MMDetection and wszoo on ``variant`` and prints the table."""
    from parity.mmdet_parity import compare_detections, prepare_variant, run_mmdet

    mm_model, ws_model = prepare_variant(variant)
    image = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    with_mask = ws_model.roi_heads.has_mask()
    runs = {"mmdet": lambda: run_mmdet(mm_model, rgb), "wszoo": _wszoo_run(ws_model, image, "bool")}
    if with_mask:
        runs["wszoo probs"] = _wszoo_run(ws_model, image, "probs")
    channels_last = copy.deepcopy(ws_model).to(memory_format=torch.channels_last)
    runs["wszoo channels_last"] = _wszoo_run(channels_last, image, "bool")
    outputs = {key: run() for key, run in runs.items()}  # warm-up
    times: dict[str, list[float]] = {key: [] for key in runs}
    peaks: dict[str, list[float]] = {key: [] for key in runs}
    for round_ in range(rounds):
        order = list(runs)
        random.Random(round_).shuffle(order)  # not a rotation: that keeps who follows whom
        for key in order:
            start = time.perf_counter()
            runs[key]()
            times[key].append(time.perf_counter() - start)
        for key in order:
            peaks[key].append(peak_added_mib(runs[key]))
    base = median(times["mmdet"])
    rows = []
    for key in runs:
        same = compare_detections(outputs["mmdet"], outputs[key]).row() if key != "mmdet" else "-"
        matched = agreement([outputs["mmdet"]], [outputs[key]])
        paired = median([t / m for t, m in zip(times[key], times["mmdet"])])
        rows.append([key, median(times[key]), median(times[key]) / base, paired, median(peaks[key]), matched, same])
    print(f"\n== {variant}: {len(outputs['mmdet']['boxes'])} MMDetection detections, {rounds} rounds ==")
    headers = ["run", "s / image", "ratio to mmdet", "paired", "peak +MiB", "IoU 0.9 matched", "vs mmdet, row by row"]
    print_table(headers, rows)
    if with_mask:
        mask = outputs["wszoo"]["masks"]
        print(f"  wszoo bool masks {tuple(mask.shape)}: {mask.numel() * mask.element_size() / 2**20:.0f} MiB")


def _photo(size: tuple[int, int]) -> np.ndarray:
    from parity.mmdet_parity import load_image

    photo = torch.from_numpy(load_image("astronaut")).permute(2, 0, 1)[None].float()
    photo = torch.nn.functional.interpolate(photo, size=size, mode="bilinear")[0]
    return np.ascontiguousarray(photo.round().clamp(0, 255).byte().permute(1, 2, 0).numpy())


def shipped_child(variant: str, run: str, size: tuple[int, int], repeats: int) -> None:
    """One process of ``--as-shipped``: prints a JSON line with the seconds of each forward."""
    from parity.mmdet_parity import prepare_variant, run_mmdet, setup
    from wszoo.inference.allocator import retain_freed_memory

    setup()
    rgb = _photo(size)
    mm_model, ws_model = prepare_variant(variant)
    if run == "mmdet":
        fn = lambda: run_mmdet(mm_model, rgb)  # noqa: E731
    else:
        retain_freed_memory()  # as wszoo predict and wszoo eval do on the CPU
        fn = _wszoo_run(ws_model, torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), "bool")
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    print(json.dumps({"times": times}))


def compare_as_shipped(variant: str, args: argparse.Namespace) -> None:
    """Each side in its own processes, taking turns: MMDetection with the default allocator,
    wszoo with the retained one, as each ships."""
    size = f"{args.size[0]}x{args.size[1]}"
    per_round: dict[str, list[float]] = {"mmdet": [], "wszoo": []}
    for round_ in range(args.rounds):
        for run in ("mmdet", "wszoo") if round_ % 2 == 0 else ("wszoo", "mmdet"):
            command = [sys.executable, __file__, "--shipped-child", run, "--variants", variant, "--size", size]
            out = subprocess.run([*command, "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
            per_round[run].append(median(json.loads(out.stdout.strip().splitlines()[-1])["times"]))
    base = median(per_round["mmdet"])
    rows = [
        [run, median(times), median(times) / base, median([t / m for t, m in zip(times, per_round["mmdet"])])]
        for run, times in per_round.items()
    ]
    print(f"\n== {variant}, as shipped: {args.rounds} processes each, {args.repeats} forwards per process ==")
    print_table(["run", "s / image", "ratio to mmdet", "paired"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="faster_r50_1x,mask_r50_2x")
    parser.add_argument("--size", type=parse_size, default=(1280, 1920), help="HEIGHTxWIDTH of the photograph")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--retain-freed-memory",
        action="store_true",
        help="call wszoo.inference.allocator.retain_freed_memory() first (process-wide: MMDetection gets it too)",
    )
    parser.add_argument(
        "--as-shipped",
        action="store_true",
        help="time each side in its own processes: MMDetection's default allocator against wszoo's retained one",
    )
    parser.add_argument("--repeats", type=int, default=3, help="forwards per process with --as-shipped")
    parser.add_argument("--shipped-child", choices=("mmdet", "wszoo"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shipped_child:
        shipped_child(args.variants, args.shipped_child, args.size, args.repeats)
        return
    if args.as_shipped:
        print_environment({"image": f"{args.size[0]}x{args.size[1]}", "allocator": "mmdet default, wszoo retained"})
        for variant in args.variants.split(","):
            compare_as_shipped(variant, args)
        print(f"\nload average at the end: {os.getloadavg()}")
        return
    if args.retain_freed_memory:
        from wszoo.inference.allocator import retain_freed_memory

        if not retain_freed_memory():
            raise SystemExit("--retain-freed-memory: this C library is not glibc")

    from parity.mmdet_parity import setup

    setup()
    height, width = args.size
    rgb = _photo(args.size)
    allocator = "retained (both)" if args.retain_freed_memory else "default"
    print_environment({"image": f"{height}x{width}", "threads": torch.get_num_threads(), "allocator": allocator})

    for variant in args.variants.split(","):
        compare_variant(variant, rgb, args.rounds)
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
