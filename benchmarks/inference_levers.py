#!/usr/bin/env python
"""End-to-end inference levers of the GN+WS R-50 detectors, each as a ratio to fp32 eager.

One run times, interleaved (rotating order each round, medians over rounds), the same detector
with random stand-in weights (the R-CNN classifier scaled so that many scores pass 0.05) on the
same uint8 images:

  fp32            eager float32 (the baseline)
  serial RoIAlign fp32 with RoIAlign in one serial call per level, as before RoIs were spread
                  over the CPU threads (wszoo/modeling/roi_align.py; CPU only)
  channels_last   ``model.to(memory_format=torch.channels_last)``
  bf16+cl         channels_last under ``torch.autocast(device, torch.bfloat16)``
  folded          ``fold_weight_standardization``: plain convs holding the standardized weights
  compiled        ``torch.compile(model)`` of the folded model (``--compile``; minutes to compile
                  on a small CPU, so off by default)
  batch4          the four images in one call vs four single calls (per-image time); on the CPU
                  the default runs them one image per pass (``images_per_cpu_pass=1``), 'one pass'
                  the whole batch at once (``images_per_cpu_pass=None``)
  tv_v2           torchvision's ``maskrcnn_resnet50_fpn_v2`` / ``fasterrcnn_resnet50_fpn_v2``
                  (random weights, same image scale), the framework baseline

For every lever it prints the median seconds per image, the ratio of medians to fp32, the paired
ratio (the median over rounds of each round's ratio, robust to a machine whose speed drifts
from round to round), and the agreement
with fp32: the fraction of fp32 detections matched by one of the lever's with the same label
and IoU >= 0.9. Then the mask-pasting micro-benchmark: 100 instances pasted into a 1280x1920
image as float probabilities (torchvision's format) and as MMDetection's bool masks, per
instance and vectorised, with the bytes of each output.

    python benchmarks/inference_levers.py                       # Faster and Mask R-50, 2 images 512x768
    python benchmarks/inference_levers.py --size 800x1216 --compile --device cuda
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import time
from pathlib import Path

import torch
from _common import agreement, median, parse_size, print_environment, print_table

import wszoo
from wszoo.modeling import roi_align
from wszoo.modeling.layers import fold_weight_standardization
from wszoo.modeling.transforms import paste_masks


def stand_in(name: str, image_scale: tuple[int, int], device: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = wszoo.get_model(name, image_scale=image_scale, resize_backend="torch").eval()
    with torch.no_grad():  # spread the scores so that the detections are not all background
        model.roi_heads.box_predictor.cls_score.weight.mul_(20)
    return model.to(device)


def images_of(size: tuple[int, int], count: int, seed: int, device: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    height, width = size
    out = []
    for index in range(count):
        # Smooth random shapes, not white noise: a detector sees edges and regions.
        small = torch.randint(0, 256, (3, height // 16, width // 16), generator=g, dtype=torch.uint8).float()
        image = torch.nn.functional.interpolate(small[None], size=(height, width), mode="bilinear")[0]
        out.append(image.round().clamp(0, 255).to(torch.uint8).to(device))
        if index % 2:
            out[-1] = out[-1].flip(-1)
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(device: str, fn, *args) -> float:
    sync(device)
    start = time.perf_counter()
    fn(*args)
    sync(device)
    return time.perf_counter() - start


def levers(name: str, args) -> None:
    device, size = args.device, args.size
    scale = args.image_scale or (round(1333 * size[0] / 800), size[0])
    model = stand_in(name, scale, device, args.seed)
    images = images_of(size, args.images, args.seed, device)
    autocast_device = "cuda" if device.startswith("cuda") else "cpu"

    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    folded = fold_weight_standardization(copy.deepcopy(model))
    runs = {
        "fp32": lambda ims: model(ims),
        "channels_last": lambda ims: channels_last(ims),
        "folded": lambda ims: folded(ims),
    }

    def bf16(ims):
        with torch.autocast(autocast_device, dtype=torch.bfloat16):
            return channels_last(ims)

    runs["bf16+cl"] = bf16
    if device == "cpu":

        def serial_roi_align(ims):
            threads_for = roi_align._threads_for
            roi_align._threads_for = lambda *args: 1
            try:
                return model(ims)
            finally:
                roi_align._threads_for = threads_for

        runs["serial RoIAlign"] = serial_roi_align
    if args.compile:
        compiled = torch.compile(fold_weight_standardization(copy.deepcopy(model)))
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(images[:1])
        print(f"  torch.compile: first call (compilation) {time.perf_counter() - start:.1f} s")
        runs["compiled"] = lambda ims: compiled(ims)
    tv = torchvision_baseline(name, scale, device) if not args.no_torchvision else None
    if tv is not None:
        runs["tv_v2"] = lambda ims: tv([i.float() / 255 for i in ims])

    outputs, times = {}, {k: [] for k in runs}
    with torch.inference_mode():
        for key, run in runs.items():  # warm-up, and the outputs compared with fp32
            outputs[key] = [run([image])[0] for image in images]
        for round_ in range(args.repeats):
            order = list(runs)
            order = order[round_ % len(order) :] + order[: round_ % len(order)]
            for key in order:
                times[key].append(sum(time_call(device, runs[key], [image]) for image in images) / len(images))
        batch_times, whole_times, single_times = [], [], []
        same_size = [images[0]] * 4
        whole = copy.copy(model)  # shares the modules; only the pass size differs
        whole.images_per_cpu_pass = None
        batch_runs = [
            (single_times, lambda: sum(time_call(device, model, [image]) for image in same_size) / 4),
            (batch_times, lambda: time_call(device, model, same_size) / 4),
            (whole_times, lambda: time_call(device, whole, same_size) / 4),
        ]
        for round_ in range(args.repeats):  # rotated like the levers: the machine's speed drifts
            for times_of, run in batch_runs[round_ % 3 :] + batch_runs[: round_ % 3]:
                times_of.append(run())

    base = median(times["fp32"])

    def paired(values: list[float], baseline: list[float]) -> float:
        # Median of the ratios within each round: the machine's speed drifts between rounds.
        return median([v / b for v, b in zip(values, baseline)])

    rows = []
    for key in runs:
        agree = "-" if key == "tv_v2" else f"{agreement(outputs['fp32'], outputs[key]):.3f}"
        dtype = str(outputs[key][0]["boxes"].dtype).replace("torch.", "")
        ratio = median(times[key]) / base
        rows.append([key, median(times[key]), ratio, paired(times[key], times["fp32"]), agree, dtype])
    for label, values in (("batch4 (per image)", batch_times), ("batch4, one pass", whole_times)):
        ratio = median(values) / median(single_times)
        rows.append([label, median(values), ratio, paired(values, single_times), "-", "-"])
    print(f"\n== {name}: {args.images} images {size[0]}x{size[1]}, image_scale {scale}, {args.repeats} rounds ==")
    print(
        "  (batch4's ratios are to four single calls of fp32 on the same image; 'batch4' runs the CPU in "
        "passes of one image (the default images_per_cpu_pass=1), 'one pass' the four at once)"
    )
    print_table(["lever", "s / image", "ratio to fp32", "paired ratio", "agreement", "boxes dtype"], rows)
    counts = [len(o["boxes"]) for o in outputs["fp32"]]
    print(f"  fp32 detections per image: {counts}")


def torchvision_baseline(name: str, scale: tuple[int, int], device: str):
    from torchvision.models import detection

    builder = detection.maskrcnn_resnet50_fpn_v2 if name.startswith("mask") else detection.fasterrcnn_resnet50_fpn_v2
    torch.manual_seed(0)
    model = builder(weights=None, weights_backbone=None, min_size=scale[1], max_size=scale[0])
    return model.eval().to(device)


def paste_benchmark(args) -> None:
    g = torch.Generator().manual_seed(args.seed)
    height, width, count = 1280, 1920, 100
    masks = torch.rand(count, 28, 28, generator=g).to(args.device)
    xy = torch.rand(count, 2, generator=g) * torch.tensor([width * 0.8, height * 0.8])
    wh = 20 + torch.rand(count, 2, generator=g) * torch.tensor([width * 0.3, height * 0.3])
    boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([width, height]))], 1).to(args.device)
    variants = {
        "probs, per instance (float (N,1,H,W))": dict(vectorised=False),
        "bool, per instance": dict(threshold=0.5, vectorised=False),
        "bool, vectorised": dict(threshold=0.5, vectorised=True),
        "probs, vectorised": dict(vectorised=True),
    }
    mmdet_paste = _mmdet_bool_paste()
    if mmdet_paste is not None:  # MMDetection's own CPU path, when this environment has it
        variants["MMDetection _do_paste_mask (bool)"] = None
    times = {k: [] for k in variants}
    sizes = {}
    for round_ in range(args.repeats + 1):
        for key, kwargs in variants.items():
            gc.collect()
            start = time.perf_counter()
            if kwargs is None:
                out = mmdet_paste(masks, boxes, height, width)
            else:
                out = paste_masks(masks, boxes, (height, width), **kwargs)
            sync(args.device)
            if round_:
                times[key].append(time.perf_counter() - start)
            sizes[key] = out.numel() * out.element_size()
            del out
    base = median(times["probs, per instance (float (N,1,H,W))"])
    if mmdet_paste is not None:
        same = torch.equal(
            mmdet_paste(masks, boxes, height, width), paste_masks(masks, boxes, (height, width), threshold=0.5)
        )
        print(f"  MMDetection's bool masks equal wszoo's mask_format='bool': {same}")
    print(f"\n== mask pasting: {count} instances into {height}x{width} ==")
    rows = [[k, median(v), median(v) / base, sizes[k] / 2**20] for k, v in times.items()]
    print_table(["paste", "seconds", "ratio to probs per instance", "output MiB"], rows)


def _mmdet_bool_paste():
    """MMDetection 3.3's CPU pasting loop (``FCNMaskHead._predict_by_feat_single``), or None."""
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "parity"))
        import mmdet_parity

        mmdet_parity.install_mmcv_ext_shim()
        from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    except ImportError:
        return None

    def paste(masks, boxes, height, width):
        out = torch.zeros((masks.shape[0], height, width), dtype=torch.bool)
        for index in range(masks.shape[0]):  # num_chunks = N on the CPU, skip_empty=True
            chunk, spatial = _do_paste_mask(masks[index : index + 1, None], boxes[index : index + 1], height, width)
            out[(index,) + spatial] = chunk >= 0.5
        return out

    return paste


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", nargs="+", default=["faster_rcnn_r50_fpn_gn_ws_all_1x_coco", "mask_rcnn_r50_fpn_gn_ws_all_2x_coco"]
    )
    parser.add_argument("--size", type=parse_size, default=(512, 768), help="image HxW (default 512x768)")
    parser.add_argument(
        "--image-scale",
        type=parse_size,
        default=None,
        metavar="LONGxSHORT",
        help="keep-ratio test scale (default: (1333, 800) scaled by H/800)",
    )
    parser.add_argument("--images", type=int, default=2, help="images per lever and round")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--no-torchvision", action="store_true", help="skip torchvision's v2 baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paste-only", action="store_true", help="only the mask-pasting comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print_environment({"device": args.device})
    paste_benchmark(args)
    for name in [] if args.paste_only else args.models:
        levers(name, args)


if __name__ == "__main__":
    main()
