"""tools/model_stats.py: the table's num_params and GFLOPs are what the script counts, and the
script counts what it says (checked against hand formulas and torchvision's own ResNet-50)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torchvision

from wszoo.registry import get_entry

REPO = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("model_stats_tool", REPO / "tools" / "model_stats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stats = _tool()


@pytest.mark.parametrize(
    "name", ["faster_rcnn_r50_fpn_gn_ws_all_1x_coco", "mask_rcnn_x101_32x4d_fpn_gn_ws_all_2x_coco", "resnet50_gn_ws"]
)
def test_table_counts_are_recomputed(name: str):
    entry = get_entry(name)
    assert stats.entry_stats(entry) == (entry.num_params, entry.gflops)


def test_the_mask_head_costs_what_its_layers_say():
    # 100 RoIs of 256x14x14: four 3x3 convs, a 2x2 stride-2 transposed conv to 28x28, 1x1 logits (81).
    per_roi = 4 * 14 * 14 * 256 * 256 * 9 + 14 * 14 * 256 * 256 * 4 + 28 * 28 * 256 * 81
    faster, mask = get_entry("faster_rcnn_r50_fpn_gn_ws_all_1x_coco"), get_entry("mask_rcnn_r50_fpn_gn_ws_all_2x_coco")
    assert round(mask.gflops - faster.gflops, 3) == round(stats.MASK_ROIS * per_roi / 1e9, 3)


def test_the_box_head_counts_1000_rois():
    # Faster R-CNN R-18 minus its backbone+FPN+RPN: 4 convs 3x3 on 7x7, fc 256*49 -> 1024, cls 81, bbox 324.
    per_roi = 4 * 7 * 7 * 256 * 256 * 9 + 256 * 49 * 1024 + 1024 * 81 + 1024 * 324
    with torch.device("meta"):
        model = stats.build_detector(arch=get_entry("faster_rcnn_r18_fpn_gn_ws").arch)
        image = torch.zeros(1, 3, *stats.DETECTOR_INPUT)
        trunk = stats.multiply_adds(lambda: model.rpn.head(list(model.backbone(image).values())))
    assert stats.detector_multiply_adds(model) - trunk == stats.BOX_ROIS * per_roi


def test_resnet50_counts_as_torchvisions_without_its_classifier():
    # Same convolutions (stride in the 3x3, as MMDetection's "pytorch" style); torchvision's fc is 2048x1000.
    with torch.device("meta"):
        ours = stats.build_resnet(arch=get_entry("resnet50_gn_ws").arch)
        theirs = torchvision.models.resnet50()
        image = torch.zeros(1, 3, 224, 224)
        reference = stats.multiply_adds(lambda: theirs(image))
    assert stats.backbone_multiply_adds(ours) == reference - 2048 * 1000
    assert abs(reference / 1e9 - 4.089) < 1e-3  # torchvision's published _ops of ResNet-50
