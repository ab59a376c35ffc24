"""Fine-tuning: a detector with another class count loads every tensor that is not class-specific."""

import pytest
import torch
from safetensors.torch import save_file
from synthetic_coco import SMALL_BUILD

from wszoo.arch import DetectorArch
from wszoo.modeling.detector import build_detector
from wszoo.training.finetune import CLASS_SPECIFIC_KEYS, build_finetune_model, class_rows, load_for_finetuning


@pytest.fixture(autouse=True)
def _offline(no_network):
    """Nothing here may touch the network (conftest's guard, for every test of this file)."""


@pytest.fixture(scope="module")
def coco_r18(tmp_path_factory):
    """A randomly initialised 81-class R-18 Mask R-CNN saved as a local safetensors checkpoint."""
    torch.manual_seed(0)
    model = build_detector(arch=DetectorArch(depth=18, with_mask=True), num_classes=81, **SMALL_BUILD)
    path = tmp_path_factory.mktemp("weights") / "mask_r18_coco.safetensors"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return path, state


def test_three_classes_load_everything_but_class_layers(coco_r18):
    path, source = coco_r18
    model, report = build_finetune_model("mask_rcnn_r18_fpn_gn_ws", num_classes=4, weights=str(path), **SMALL_BUILD)
    state = model.state_dict()
    assert sorted(report.reinitialised) == sorted(CLASS_SPECIFIC_KEYS)
    assert sorted(report.loaded) == sorted(set(source) - set(CLASS_SPECIFIC_KEYS))
    for key in report.loaded:
        assert torch.equal(state[key], source[key]), key
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (4, 1024)
    assert state["roi_heads.box_predictor.bbox_pred.weight"].shape == (16, 1024)
    assert state["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape[0] == 4


def test_class_subset_keeps_pretrained_rows(coco_r18):
    path, source = coco_r18
    names = ["car", "person", "dog"]  # COCO labels 3, 1, 17
    model, report = build_finetune_model("mask_rcnn_r18_fpn_gn_ws", classes=names, weights=str(path), **SMALL_BUILD)
    state = model.state_dict()
    assert sorted(report.subset) == sorted(CLASS_SPECIFIC_KEYS) and report.classes == tuple(names)
    rows = [0, 3, 1, 17]
    assert torch.equal(
        state["roi_heads.box_predictor.cls_score.weight"], source["roi_heads.box_predictor.cls_score.weight"][rows]
    )
    bbox_rows = [4 * r + k for r in rows for k in range(4)]
    assert torch.equal(
        state["roi_heads.box_predictor.bbox_pred.bias"], source["roi_heads.box_predictor.bbox_pred.bias"][bbox_rows]
    )
    assert class_rows("roi_heads.box_predictor.bbox_pred.weight", [0, 2]).tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    with pytest.raises(ValueError, match="close matches"):
        build_finetune_model("mask_rcnn_r18_fpn_gn_ws", classes=["persn"], weights=str(path), **SMALL_BUILD)


def test_another_architecture_is_refused(coco_r18):
    _, source = coco_r18
    faster = build_detector(arch=DetectorArch(depth=18), num_classes=4, **SMALL_BUILD)
    with pytest.raises(ValueError, match="does not fit"):
        load_for_finetuning(faster, source)


def test_zoo_detector_shapes_for_three_classes():
    """Every published architecture: only the class-specific tensors change shape (meta device)."""
    with torch.device("meta"):
        coco = build_detector(arch=DetectorArch(depth=50, with_mask=True), num_classes=81)
        small = build_detector(arch=DetectorArch(depth=50, with_mask=True), num_classes=4)
    a, b = coco.state_dict(), small.state_dict()
    assert a.keys() == b.keys()
    changed = {k for k in a if a[k].shape != b[k].shape}
    assert changed == set(CLASS_SPECIFIC_KEYS)
