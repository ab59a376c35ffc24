#!/usr/bin/env python
"""Training-step cost of weight standardization: GN+WS detector vs the same detector with plain convs.

Both models are the same GN Faster R-CNN (random weights, frozen stem and layer1 as in the
configs), one with ``WSConv2d`` wherever MMDetection has ConvWS, one with ``nn.Conv2d``
(``DetectorArch(weight_standardization=False)``). One step = forward with targets, backward,
SGD step. Each configuration runs in its own subprocess (so peak memory is its own), with
warm-up steps first; the two alternate over ``--rounds`` rounds to cancel machine drift.
Reported: median step time of each, their ratio (goal: WS / plain <= 1.05) and peak memory
(CUDA: ``max_memory_allocated``; CPU: the process' peak resident set size).

Default: depth 50, 2 images of 512x683 px at image_scale (853, 512) (MMDetection's training
scale times 512/800), 512 RoIs per image, on CPU. Full size on a GPU:
``--device cuda --size 800x1067 --scale 1333x800``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _common import median, print_environment, print_table


def _pair(text: str) -> tuple[int, int]:
    a, b = (int(v) for v in text.lower().split("x"))
    return a, b


def _worker(args) -> None:
    import resource

    import torch

    from wszoo.arch import DetectorArch
    from wszoo.modeling.detector import build_detector

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = (
        build_detector(
            arch=DetectorArch(depth=args.depth, weight_standardization=args.ws == "ws"),
            num_classes=81,
            image_scale=_pair(args.scale),
            box_batch_size_per_image=args.rois,
        )
        .to(device)
        .train()
    )
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.001, momentum=0.9, weight_decay=1e-4
    )
    height, width = _pair(args.size)
    generator = torch.Generator().manual_seed(1)
    images = [
        torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator).to(device)
        for _ in range(args.batch)
    ]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 200.0, 220.0], [250.0, 100.0, 480.0, 400.0]], device=device),
            "labels": torch.tensor([3, 17], device=device),
        }
        for _ in range(args.batch)
    ]
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]

    def step() -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            losses = model(images, targets)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"times": times, "peak_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--size", default="512x683", help="input image HxW")
    parser.add_argument("--scale", default="853x512", help="image_scale LONGxSHORT")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rois", type=int, default=512, help="box_batch_size_per_image")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ws", choices=("ws", "plain"), help=argparse.SUPPRESS)  # worker mode
    args = parser.parse_args()
    if args.ws:
        _worker(args)
        return
    print_environment(
        {
            "device": args.device,
            "depth": args.depth,
            "images": f"{args.batch} x {args.size}",
            "image_scale": args.scale,
            "rois/image": args.rois,
            "amp": args.amp,
        }
    )
    results = {"ws": {"times": [], "peak_mb": 0.0}, "plain": {"times": [], "peak_mb": 0.0}}
    ratios = []
    for round_index in range(args.rounds):
        order = ("ws", "plain") if round_index % 2 == 0 else ("plain", "ws")
        medians = {}
        for variant in order:
            out = subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--ws", variant],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ},
            ).stdout
            record = json.loads(out.strip().splitlines()[-1])
            results[variant]["times"] += record["times"]
            results[variant]["peak_mb"] = max(results[variant]["peak_mb"], record["peak_mb"])
            medians[variant] = median(record["times"])
        ratios.append(medians["ws"] / medians["plain"])
    ws, plain = median(results["ws"]["times"]), median(results["plain"]["times"])
    print_table(
        ["model", "step (s, median)", "peak memory (MB)"],
        [
            ["GN+WS", f"{ws:.3f}", f"{results['ws']['peak_mb']:.0f}"],
            ["GN, plain conv", f"{plain:.3f}", f"{results['plain']['peak_mb']:.0f}"],
        ],
    )
    print(f"\nstep time WS / plain: {ws / plain:.3f} (median of per-round ratios {median(ratios):.3f}; goal <= 1.05)")
    print(f"peak memory WS / plain: {results['ws']['peak_mb'] / results['plain']['peak_mb']:.3f}")


if __name__ == "__main__":
    main()
