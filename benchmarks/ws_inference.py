#!/usr/bin/env python
"""Eval-mode cost of weight standardization in the GN+WS R-50 Faster R-CNN.

Three configurations of the same detector (random weights), timed on one uint8 image:

  (a) ws-cached     WSConv2d, standardized weight cached (normal eval mode)
  (b) plain         nn.Conv2d everywhere (``DetectorArch(weight_standardization=False)``),
                    loaded with the *standardized* weights of (a), so it computes the same
                    function and runs the same number of proposals / detections
  (c) ws-recompute  the model of (a) with a forward pre-hook on every WSConv2d calling
                    ``clear_cache()``, so the weight is standardized again at every call

Configurations are interleaved within each repetition (rotating their order) to cancel drift;
medians are reported, plus the median of the per-repetition ratios. Goal: (a)/(b) <= 1.02.

Default: a 512x768 image with image_scale (853, 512), i.e. MMDetection's test scale scaled by
512/800, so that the run fits in ~2-3 minutes on a 2-core CPU (one full-size forward takes ~20 s
there). Full size: ``--size 800x1216`` (image_scale (1333, 800)).
"""

from __future__ import annotations

import argparse
import os

import torch
from _common import median, parse_size, print_environment, print_table, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--size", type=parse_size, default=(512, 768), help="input image HxW (default 512x768; full size 800x1216)"
    )
    parser.add_argument(
        "--image-scale",
        type=parse_size,
        default=None,
        metavar="LONGxSHORT",
        help="keep-ratio test scale; default (1333, 800) scaled by H/800",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards per configuration first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--grad-mode", choices=("inference_mode", "no_grad"), default="inference_mode")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--micro-repeats", type=int, default=20, help="repetitions of the direct standardization-overhead measurement"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    from wszoo.arch import DetectorArch
    from wszoo.modeling.detector import build_detector
    from wszoo.modeling.layers import WSConv2d, standardize_weight

    height, width = args.size
    image_scale = args.image_scale or (round(1333 * height / 800), height)
    device = torch.device(args.device)
    print_environment(
        {
            "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
            "input": f"{height}x{width} uint8",
            "image_scale": image_scale,
            "grad mode": args.grad_mode,
            "repeats": args.repeats,
            "warmup": args.warmup,
        }
    )

    torch.manual_seed(args.seed)
    ws_model = build_detector(arch=DetectorArch(depth=50), image_scale=image_scale).eval()
    plain_model = build_detector(
        arch=DetectorArch(depth=50, weight_standardization=False), image_scale=image_scale
    ).eval()

    # (b) must really be plain: no WSConv2d anywhere, and as many convs as (a).
    ws_convs = {n for n, m in ws_model.named_modules() if isinstance(m, WSConv2d)}
    assert not any(isinstance(m, WSConv2d) for m in plain_model.modules()), "plain model has WSConv2d"
    convs_a = sum(isinstance(m, torch.nn.Conv2d) for m in ws_model.modules())
    convs_b = sum(type(m) is torch.nn.Conv2d for m in plain_model.modules())
    assert convs_a == convs_b, (convs_a, convs_b)
    print(
        f"model (a): {len(ws_convs)} WSConv2d + {convs_a - len(ws_convs)} nn.Conv2d; "
        f"model (b): {convs_b} nn.Conv2d, 0 WSConv2d"
    )

    # Give (b) the standardized weights of (a): same function, same proposals, same work.
    state = ws_model.state_dict()
    with torch.no_grad():
        for name in ws_convs:
            state[f"{name}.weight"] = standardize_weight(state[f"{name}.weight"], ws_model.get_submodule(name).eps)
    plain_model.load_state_dict(state)
    ws_model.to(device)
    plain_model.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)).to(
        device
    )
    grad_ctx = torch.inference_mode if args.grad_mode == "inference_mode" else torch.no_grad

    hooks: list = []

    def set_recompute(on: bool) -> None:
        while hooks:
            hooks.pop().remove()
        if on:
            for module in ws_model.modules():
                if isinstance(module, WSConv2d):
                    hooks.append(module.register_forward_pre_hook(lambda mod, _inp: mod.clear_cache()))

    outputs = {}

    def run(config: str) -> float:
        model = plain_model if config == "b" else ws_model
        set_recompute(config == "c")
        with grad_ctx():
            sync()
            seconds = timed(lambda: (outputs.__setitem__(config, model([image])[0]), sync()))
        set_recompute(False)
        return seconds

    configs = ("a", "b", "c")
    for config in configs:
        for _ in range(args.warmup):
            run(config)
    # Same function in all three: check once that they agree (so the work is the same).
    boxes = {c: outputs[c]["boxes"] for c in configs}
    counts = {c: len(b) for c, b in boxes.items()}
    print(f"detections per configuration: {counts}")
    if counts["a"] == counts["b"] and counts["a"]:
        print(f"max |boxes(a) - boxes(b)| = {float((boxes['a'] - boxes['b']).abs().max()):.3g} px")

    times: dict[str, list[float]] = {c: [] for c in configs}
    for rep in range(args.repeats):
        order = configs[rep % 3 :] + configs[: rep % 3]
        for config in order:
            times[config].append(run(config))
        print(f"  rep {rep + 1}/{args.repeats}: " + "  ".join(f"{c}={times[c][-1]:.3f}s" for c in configs), flush=True)

    labels = {
        "a": "(a) WSConv2d, cached standardization",
        "b": "(b) plain nn.Conv2d (baseline)",
        "c": "(c) WSConv2d, recomputed every call",
    }
    base = median(times["b"])
    print()
    print_table(
        ["configuration", "median s", "min s", "max s", "median / (b)"],
        [
            [labels[c], median(times[c]), min(times[c]), max(times[c]), f"{median(times[c]) / base:.4f}"]
            for c in configs
        ],
    )
    paired_a = median([a / b for a, b in zip(times["a"], times["b"])])
    paired_c = median([c / b for c, b in zip(times["c"], times["b"])])
    ratio_a = median(times["a"]) / base
    print()
    print(
        f"time(a)/time(b) = {ratio_a:.4f} (median of per-rep ratios {paired_a:.4f}); goal <= 1.02: "
        f"{'MET' if ratio_a <= 1.02 else 'MISSED'}"
    )
    print(f"time(c)/time(b) = {median(times['c']) / base:.4f} (median of per-rep ratios {paired_c:.4f})")
    spread = (max(times["b"]) - min(times["b"])) / base
    if spread > 0.02:
        print(
            f"WARNING: the baseline's own spread (max - min) is {100 * spread:.1f}% of its median, more than the "
            "2% the goal asks to resolve: the end-to-end ratios above are within noise (busy machine? see the "
            "load average; try --threads 1 or more --repeats). The direct cost below does not depend on it."
        )

    # End-to-end times on a shared machine are noisy; the part that differs between the
    # configurations can also be timed on its own: fetching every WSConv2d's weight.
    ws_modules = [m for m in ws_model.modules() if isinstance(m, WSConv2d)]

    def fetch_all(recompute: bool) -> None:
        with grad_ctx():
            for module in ws_modules:
                if recompute:
                    module.clear_cache()
                module.standardized_weight()
        sync()

    fetch_all(False)
    cached = median([timed(lambda: fetch_all(False)) for _ in range(args.micro_repeats)])
    recomputed = median([timed(lambda: fetch_all(True)) for _ in range(args.micro_repeats)])
    print()
    print(f"direct cost per forward of the {len(ws_modules)} WSConv2d weights (median of {args.micro_repeats}):")
    print_table(
        ["weights", "ms per forward", "% of time(b)", "implied ratio vs (b)"],
        [
            ["cached (a)", cached * 1e3, f"{100 * cached / base:.3f}%", f"{1 + cached / base:.4f}"],
            ["recomputed (c)", recomputed * 1e3, f"{100 * recomputed / base:.3f}%", f"{1 + recomputed / base:.4f}"],
        ],
    )
    print(f"(load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())})")


if __name__ == "__main__":
    main()
