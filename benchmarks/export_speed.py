#!/usr/bin/env python
"""onnxruntime (CPU) against eager PyTorch on the same images: time ratio and agreement.

For each model: a stand-in with random weights (classifier scaled so that many scores pass
0.05) is exported with ``wszoo.export_onnx`` (WS folded, pre- and post-processing in the graph),
then the eager model (``resize_backend="torch"``, ``mask_format="bool"``: what the graph computes)
and the ONNX graph run on the same images, interleaved over rounds (medians). Agreement: same
labels, max |Δbox| and |Δscore| between matching detections.

    python benchmarks/export_speed.py                                # Faster and Mask R-50, 512x768
    python benchmarks/export_speed.py --models faster_rcnn_r18_fpn_gn_ws --size 800x1216
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import median, parse_size, print_environment, print_table

import wszoo
from wszoo.export import OnnxDetector, export_onnx


def image(shape: tuple[int, int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (3, shape[0] // 16 + 1, shape[1] // 16 + 1), generator=g).float()
    return torch.nn.functional.interpolate(small[None], size=shape, mode="bilinear")[0].round().to(torch.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", nargs="+", default=["faster_rcnn_r50_fpn_gn_ws_all_1x_coco", "mask_rcnn_r50_fpn_gn_ws_all_2x_coco"]
    )
    parser.add_argument("--size", type=parse_size, default=(512, 768), help="image HxW (default 512x768)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print_environment()
    scale = (round(1333 * args.size[0] / 800), args.size[0])
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = wszoo.get_model(name, resize_backend="torch", image_scale=scale, mask_format="bool").eval()
        with torch.no_grad():
            model.roi_heads.box_predictor.cls_score.weight.mul_(20)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            path = export_onnx(model, Path(tmp) / "model.onnx")
            export_seconds = time.perf_counter() - start
            onnx = OnnxDetector(path)
            images = [image(args.size, 1), image(args.size[::-1], 2)]
            eager_times, onnx_times, worst_box, worst_score, same_labels = [], [], 0.0, 0.0, True
            with torch.inference_mode():
                for round_ in range(args.repeats + 1):
                    for runner in ("eager", "onnx") if round_ % 2 else ("onnx", "eager"):
                        start = time.perf_counter()
                        outs = [model([i])[0] for i in images] if runner == "eager" else onnx(images)
                        seconds = (time.perf_counter() - start) / len(images)
                        if round_:  # round 0 warms up
                            (eager_times if runner == "eager" else onnx_times).append(seconds)
                        if runner == "eager":
                            eager_outs = outs
                        else:
                            onnx_outs = outs
                    for a, b in zip(eager_outs, onnx_outs):
                        same_labels &= torch.equal(a["labels"], b["labels"])
                        if same_labels and len(a["boxes"]):
                            worst_box = max(worst_box, float((a["boxes"] - b["boxes"]).abs().max()))
                            worst_score = max(worst_score, float((a["scores"] - b["scores"]).abs().max()))
        rows.append(
            [
                name,
                export_seconds,
                median(eager_times),
                median(onnx_times),
                median(onnx_times) / median(eager_times),
                same_labels,
                worst_box,
                worst_score,
            ]
        )
    print(f"== onnxruntime vs eager, {args.size[0]}x{args.size[1]} and its transpose, image_scale {scale} ==")
    print_table(
        ["model", "export s", "eager s/img", "onnx s/img", "onnx / eager", "same labels", "max |Δbox|", "max |Δscore|"],
        rows,
    )


if __name__ == "__main__":
    main()
