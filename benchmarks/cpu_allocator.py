#!/usr/bin/env python
"""What ``wszoo.inference.allocator.retain_freed_memory`` saves on a CPU forward.

The setting is process-wide and cannot be undone, so each measurement is a child process:
the default C allocator and the retained one take turns (the order alternates every round),
each child builds the same detector (random stand-in weights, the R-CNN classifier scaled so
that many scores pass 0.05), runs one warm-up forward and then ``--repeats`` timed ones on the
same uint8 image. It prints, per setting, the median seconds per forward, the ratio of medians
to the default, the paired ratio (median over rounds of each round's ratio: the two children
of a round are neighbours in time, so it is the less exposed to the machine's drifting speed),
the minor page faults per forward and the peak resident memory of the child.

    python benchmarks/cpu_allocator.py                                  # Mask R-50 at 800x1216
    python benchmarks/cpu_allocator.py --model faster_rcnn_r50_fpn_gn_ws_all_1x_coco --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import median, parse_size, print_environment, print_table

SETTINGS = ("default", "retained")


def child(args: argparse.Namespace) -> None:
    """One measurement: prints a JSON line with the times, faults and peak memory."""
    import torch
    from inference_levers import images_of, stand_in

    from wszoo.inference.allocator import retain_freed_memory

    if args.child == "retained" and not retain_freed_memory():
        raise SystemExit("this C library is not glibc: nothing to measure")
    model = stand_in(args.model, args.size, "cpu", seed=0)
    image = images_of(args.size, 1, seed=0, device="cpu")[0]
    with torch.inference_mode():
        model([image])
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            model([image])
            times.append(time.perf_counter() - start)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.repeats
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times, "faults": faults, "peak_mib": peak_mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mask_rcnn_r50_fpn_gn_ws_all_2x_coco")
    parser.add_argument("--size", type=parse_size, default=(800, 1216), help="HEIGHTxWIDTH of the image")
    parser.add_argument("--rounds", type=int, default=4, help="child processes per setting")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per child")
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    print_environment({"model": args.model, "image": "x".join(map(str, args.size))})
    size = f"{args.size[0]}x{args.size[1]}"
    results: dict[str, list[dict]] = {setting: [] for setting in SETTINGS}
    here = Path(__file__).resolve().parent
    for round_ in range(args.rounds):
        for setting in SETTINGS if round_ % 2 == 0 else SETTINGS[::-1]:
            command = [sys.executable, str(here / "cpu_allocator.py"), "--child", setting]
            command += ["--model", args.model, "--size", size, "--repeats", str(args.repeats)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[setting].append(json.loads(out.strip().splitlines()[-1]))
            print(f"  round {round_ + 1} {setting:<9} {statistics.median(results[setting][-1]['times']):.3f} s")
    per_round = {s: [statistics.median(r["times"]) for r in results[s]] for s in SETTINGS}
    base = median(per_round["default"])
    rows = []
    for setting in SETTINGS:
        paired = median([t / b for t, b in zip(per_round[setting], per_round["default"])])
        faults = median([r["faults"] for r in results[setting]])
        peak = median([r["peak_mib"] for r in results[setting]])
        rows.append([setting, median(per_round[setting]), median(per_round[setting]) / base, paired, faults, peak])
    print()
    print_table(["allocator", "s / forward", "ratio", "paired", "page faults / forward", "peak MiB"], rows)
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
