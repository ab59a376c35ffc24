"""Recognising a model from an MMDetection checkpoint's file name, folder, meta and key layout.

State dicts are meta-device tensors in the exact key layout of the published checkpoints
(``tests/data/mmdet_keys``): recognition reads names and shapes only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reference_data import mmdet_keys

import wszoo
from wszoo.checkpoint_io import CheckpointError
from wszoo.cli import main as cli_main
from wszoo.conversion.recognize import (
    describe_layout,
    infer_arch,
    model_named_by,
    recognise,
    source_config_name,
    unrecognised_message,
)

MASK_2X = wszoo.get_entry("mask_rcnn_r50_fpn_gn_ws_all_2x_coco")
MASK_24E = wszoo.get_entry("mask_rcnn_r50_fpn_gn_ws_all_20_23_24e_coco")
FASTER_X101 = wszoo.get_entry("faster_rcnn_x101_32x4d_fpn_gn_ws_all_1x_coco")


def layout(config: str, *, device: str = "meta") -> dict[str, torch.Tensor]:
    """Tensors of a published checkpoint's key layout (empty on the meta device, zeros elsewhere)."""
    make = (lambda s: torch.empty(s, device="meta")) if device == "meta" else torch.zeros
    return {name: make(shape) for name, shape, *_ in mmdet_keys(config)["keys"]}


@pytest.fixture(scope="module")
def mask_r50() -> dict[str, torch.Tensor]:
    return layout(MASK_2X.mmdet_v2_config)


@pytest.mark.parametrize(
    "file_name, expected",
    [
        # published file names, and the same config with another date and hash
        ("mask_rcnn_r50_fpn_gn_ws-all_2x_coco_20200226-16acb762.pth", MASK_2X),
        ("mask_rcnn_r50_fpn_gn_ws-all_2x_coco_20200101-0123abcd.pth", MASK_2X),
        ("mask_rcnn_r50_fpn_gn_ws-all_20_23_24e_coco_20200213-487d1283.pth", MASK_24E),
        # users' own runs, v2 and v3 spellings
        ("mask-rcnn_r50_fpn_gn-ws-all_2x_coco_epoch_12.pth", MASK_2X),
        ("mask-rcnn_r50_fpn_gn-ws-all_20-23-24e_coco_epoch_24.pth", MASK_24E),
        ("mask_rcnn_r50_fpn_gn_ws-all_20_23_24e_coco_20231005_120000.pth", MASK_24E),
        ("mask_rcnn_r50_fpn_gn_ws_all_2x_coco.pth", MASK_2X),  # the builder name
        ("MASK-RCNN_R50_FPN_GN-WS-ALL_2X_COCO.pth", MASK_2X),
        # MMDetection's work_dirs/<config>/epoch_N.pth
        ("work_dirs/mask-rcnn_r50_fpn_gn-ws-all_20-23-24e_coco/epoch_12.pth", MASK_24E),
        ("work_dirs/mask_rcnn_r50_fpn_gn_ws-all_2x_coco/best_coco_bbox_mAP_epoch_20.pth", MASK_2X),
    ],
)
def test_recognised_from_a_file_name_that_starts_with_a_config_name(mask_r50, file_name, expected):
    assert recognise(mask_r50, file_name=file_name) is expected
    assert recognise(mask_r50, file_name=Path(file_name)) is expected


@pytest.mark.parametrize(
    "text",
    [
        "mask_rcnn_r50_fpn_gn_ws-all_2xcoco.pth",  # the whole config name, followed by '_', '.' or nothing
        "mask_rcnn_r50_fpn_gn_ws-all_20_23_24e.pth",
        "my_mask_rcnn_r50_fpn_gn_ws-all_2x_coco.pth",  # at the start only
        "epoch_12.pth",
        "",
    ],
)
def test_a_name_must_start_with_a_whole_config_name(text):
    assert model_named_by(text) is None


def test_the_longest_config_name_wins():
    # GN-only and GN+WS ResNeXt backbones: one name is a prefix of the other
    assert model_named_by("resnext50_32x4d_gn_ws-0d87ac85.pth").name == "resnext50_32x4d_gn_ws"
    assert model_named_by("resnext50_32x4d_gn-c7e8b754.pth").name == "resnext50_32x4d_gn"
    assert model_named_by("mask-rcnn_r50_fpn_gn-ws-all_20-23-24e_coco") is MASK_24E
    assert model_named_by("mask-rcnn_r50_fpn_gn-ws-all_2x_coco") is MASK_2X


@pytest.mark.parametrize(
    "meta, expected",
    [
        # mmdet 2.x tools/train.py: exp_name is the config's file name
        ({"exp_name": "mask_rcnn_r50_fpn_gn_ws-all_20_23_24e_coco.py", "mmdet_version": "2.28.2"}, MASK_24E),
        # mmengine (mmdet 3.x): experiment_name is <config>_<timestamp>
        ({"experiment_name": "mask-rcnn_r50_fpn_gn-ws-all_2x_coco_20231005_120000"}, MASK_2X),
        # the merged config text's work_dir (2.x "config", 3.x "cfg")
        (
            {"config": "model = dict(type='MaskRCNN')\nwork_dir = './work_dirs/mask_rcnn_r50_fpn_gn_ws-all_2x_coco'\n"},
            MASK_2X,
        ),
        (
            {"cfg": "default_scope = 'mmdet'\nwork_dir = './work_dirs/mask-rcnn_r50_fpn_gn-ws-all_20-23-24e_coco'\n"},
            MASK_24E,
        ),
    ],
)
def test_recognised_from_mmdetection_meta(mask_r50, meta, expected):
    assert recognise(mask_r50, meta=meta) is expected
    # the meta wins over a file name that names nothing, and over a bare folder
    assert recognise(mask_r50, meta=meta, file_name="checkpoints/epoch_12.pth") is expected


def test_meta_wins_over_the_file_name_and_names_outside_the_zoo_are_skipped(mask_r50):
    meta = {"exp_name": "mask_rcnn_r50_fpn_gn_ws-all_20_23_24e_coco.py"}
    assert recognise(mask_r50, meta=meta, file_name="mask_rcnn_r50_fpn_gn_ws-all_2x_coco_epoch_3.pth") is MASK_24E
    # a config of the user's own, with a --work-dir of their own: the file name decides
    own = {"exp_name": "my_finetune.py", "config": "work_dir = 'runs/exp3'\n"}
    assert source_config_name(own) == "my_finetune.py"
    assert recognise(mask_r50, meta=own, file_name="mask-rcnn_r50_fpn_gn-ws-all_2x_coco_epoch_3.pth") is MASK_2X
    assert source_config_name({}) is None


def test_a_name_that_disagrees_with_the_keys_is_refused_in_words(mask_r50):
    with pytest.raises(CheckpointError) as info:
        recognise(mask_r50, file_name="faster_rcnn_x101_32x4d_fpn_gn_ws-all_1x_coco_epoch_12.pth")
    message = str(info.value)
    assert "faster_rcnn_x101_32x4d_fpn_gn_ws_all_1x_coco" in message
    assert "a Faster R-CNN with a ResNeXt-101 32x4d backbone and 80 classes" in message
    assert "a Mask R-CNN with a ResNet-50 backbone and 80 classes" in message
    assert "--model" in message and "DetectorArch" not in message
    # a checkpoint of the same network fine-tuned on 3 classes is not the 80-class zoo model
    three = dict(mask_r50, **{"roi_head.bbox_head.fc_cls.weight": torch.empty(4, 1024, device="meta")})
    with pytest.raises(CheckpointError, match="and 3 classes"):
        recognise(three, meta={"exp_name": MASK_2X.mmdet_v2_config + ".py"})


def test_ambiguous_layout_names_the_candidates_in_words(mask_r50):
    assert recognise(mask_r50) is None  # 2x and 20-23-24e share every key and shape
    assert recognise(mask_r50, file_name="checkpoints/latest.pth") is None
    message = unrecognised_message(mask_r50, name="latest.pth")
    assert f"{MASK_2X.name}, {MASK_24E.name}" in message
    assert "a Mask R-CNN with a ResNet-50 backbone and 80 classes" in message
    assert "--model" in message and "DetectorArch" not in message and "[" not in message
    unique = layout(FASTER_X101.mmdet_v2_config)
    assert recognise(unique, file_name="latest.pth") is FASTER_X101


def test_describe_layout():
    arch, num_classes = infer_arch(layout(FASTER_X101.mmdet_v2_config))
    assert describe_layout(arch, num_classes) == "a Faster R-CNN with a ResNeXt-101 32x4d backbone and 80 classes"
    assert describe_layout(wszoo.get_entry("resnet50_gn_ws").arch, None) == "a ResNet-50 ImageNet backbone"


def test_convert_recognises_a_users_run_in_its_work_dir(tmp_path, capsys):
    run_dir = tmp_path / "work_dirs" / MASK_24E.mmdet_v3_config
    run_dir.mkdir(parents=True)
    source = run_dir / "epoch_24.pth"
    torch.save({"meta": {"epoch": 24}, "state_dict": layout(MASK_24E.mmdet_v2_config, device="cpu")}, source)
    out = tmp_path / "out.safetensors"
    assert cli_main(["convert", str(source), str(out)]) == 0
    assert f"({MASK_24E.name}," in capsys.readouterr().out
    assert wszoo.checkpoint_io.read_safetensors(out)[1]["wszoo_model"] == MASK_24E.name
    # the same file elsewhere: its layout is shared, so the error names both candidates
    elsewhere = tmp_path / "epoch_24.pth"
    source.rename(elsewhere)
    assert cli_main(["convert", str(elsewhere), str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{MASK_2X.name}, {MASK_24E.name}" in err and "--model" in err
