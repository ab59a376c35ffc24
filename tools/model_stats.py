"""Counts each zoo model's parameters and GFLOPs: the ``num_params`` and ``gflops`` of the zoo table.

    python tools/model_stats.py           # print every entry's counts as table fields
    python tools/model_stats.py --check   # exit 1 when a count differs from wszoo/zoo.py

What is counted (``tests/test_model_stats.py`` recomputes it):

* ``num_params``: every parameter of the model a builder returns with its defaults (detectors:
  81 classes; backbones: the feature extractor without an ImageNet classifier).
* ``gflops``: multiply-adds of convolutions and matrix products, in units of 1e9 -- torchvision's
  ``_ops`` convention (``torch.utils.flop_counter.FlopCounterMode`` counts 2 per multiply-add;
  its count is halved). Elementwise work (weight standardization, GroupNorm, ReLU), RoIAlign,
  anchors, box decoding and NMS are not counted. Detectors at one 800x1216 image (no resize
  by the default 1333x800 scale, no padding): backbone + FPN + RPN head over the five levels,
  the box head and predictor over 1000 RoIs (the test-time ``max_per_img`` of the RPN), and for
  Mask R-CNN the mask head and predictor over 100 RoIs (``detections_per_img``). Backbones at
  one 224x224 image through the feature extractor. The counts are fixed by the input size
  alone (RoIs are fed as pooled features), so they are computed on the meta device: no weights,
  no memory, a few seconds for the whole zoo.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from wszoo.arch import DetectorArch  # noqa: E402
from wszoo.modeling.detector import build_detector, build_resnet  # noqa: E402
from wszoo.settings import DEFAULT_SETTINGS  # noqa: E402
from wszoo.zoo import ENTRIES, ZooEntry  # noqa: E402

DETECTOR_INPUT = (800, 1216)  # (height, width)
BACKBONE_INPUT = (224, 224)
BOX_ROIS = DEFAULT_SETTINGS.rpn_post_nms_top_n  # 1000
MASK_ROIS = DEFAULT_SETTINGS.detections_per_img  # 100


def count_params(model: nn.Module) -> int:
    """Every parameter of ``model`` (frozen ones too)."""
    return sum(p.numel() for p in model.parameters())


def multiply_adds(run: Callable[[], object]) -> int:
    """Multiply-adds of the convolutions and matrix products that ``run()`` executes."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops() // 2


def detector_multiply_adds(model: nn.Module, *, size: tuple[int, int] = DETECTOR_INPUT) -> int:
    """Multiply-adds of a detector at one image of ``size``, as defined in the module docstring."""
    device = next(model.parameters()).device
    image = torch.zeros(1, 3, *size, device=device)
    heads = model.roi_heads

    def run() -> None:
        features = list(model.backbone(image).values())
        model.rpn.head(features)
        channels = features[0].shape[1]
        box_size = heads.box_roi_pool.output_size
        heads.box_predictor(heads.box_head(torch.zeros(BOX_ROIS, channels, box_size, box_size, device=device)))
        if heads.has_mask():
            mask_size = heads.mask_roi_pool.output_size
            rois = torch.zeros(MASK_ROIS, channels, mask_size, mask_size, device=device)
            heads.mask_predictor(heads.mask_head(rois))

    return multiply_adds(run)


def backbone_multiply_adds(model: nn.Module, *, size: tuple[int, int] = BACKBONE_INPUT) -> int:
    """Multiply-adds of a ResNet feature extractor at one image of ``size``."""
    image = torch.zeros(1, 3, *size, device=next(model.parameters()).device)
    return multiply_adds(lambda: model.forward_features(image))


def entry_stats(entry: ZooEntry) -> tuple[int, float]:
    """``(num_params, gflops)`` of an entry, built on the meta device; gflops rounded to 3 places."""
    with torch.device("meta"):
        if isinstance(entry.arch, DetectorArch):
            model = build_detector(arch=entry.arch, num_classes=entry.num_classes or 81)
            ops = detector_multiply_adds(model)
        else:
            model = build_resnet(arch=entry.arch)
            ops = backbone_multiply_adds(model)
    return count_params(model), round(ops / 1e9, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when wszoo/zoo.py's counts are stale")
    args = parser.parse_args(argv)
    stale = 0
    for entry in ENTRIES:
        num_params, gflops = entry_stats(entry)
        mark = ""
        if (entry.num_params, entry.gflops) != (num_params, gflops):
            stale += 1
            mark = f"  # table has num_params={entry.num_params}, gflops={entry.gflops}"
        print(f"{entry.name}: num_params={num_params}, gflops={gflops},{mark}")
    if args.check and stale:
        print(f"{stale} entries of wszoo/zoo.py are stale", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
