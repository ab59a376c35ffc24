"""Conversion of MMDetection checkpoints: exact key layouts, class rows, leftovers, safety."""

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from reference_data import backbones as reference_backbones
from reference_data import mmdet_keys

import wszoo
from wszoo.arch import DetectorArch, ResNetArch
from wszoo.checkpoint_io import CheckpointError, UnsafeCheckpointError, read_checkpoint, read_safetensors
from wszoo.cli import main as cli_main
from wszoo.conversion import ConversionError
from wszoo.conversion.api import convert_file, convert_for, infer_arch, recognise, target_shapes
from wszoo.modeling.detector import build_detector, build_resnet

MASK_R50 = wszoo.get_entry("mask_rcnn_r50_fpn_gn_ws_all_2x_coco")


def _keys(config):
    return mmdet_keys(config)["keys"]


def synthetic_checkpoint(config, seed=0):
    """Random tensors in the exact key layout of a published MMDetection checkpoint."""
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) for name, shape, *_ in _keys(config)}


def backbone_checkpoint(depth=50, groups=1, seed=0, fc=False):
    """An ImageNet backbone state dict as MMDetection names it (``gnK`` norms, no prefix)."""
    native = build_resnet(arch=ResNetArch(depth, groups, 4 if groups > 1 else 64), num_classes=1000 if fc else None)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in native.state_dict().items():
        key = key.replace("norm", "gn")
        out[key] = torch.randn(value.shape, generator=g)
    return out


@pytest.fixture(scope="module")
def mask_r50_source():
    return synthetic_checkpoint(MASK_R50.mmdet_v2_config)


@pytest.fixture(scope="module")
def mask_r50_model():
    return build_detector(arch=MASK_R50.arch)


def test_published_layout_loads_strictly_and_class_rows_are_reordered(mask_r50_source, mask_r50_model):
    converted, report = convert_for(mask_r50_source, arch=MASK_R50.arch, num_classes=81)
    mask_r50_model.load_state_dict(converted, strict=True)
    assert len(report.mappings) == len(mask_r50_source)
    src, out = mask_r50_source, converted
    # fc_cls: MMDetection's background (last row) becomes torchvision's row 0; class c moves to c + 1.
    assert torch.equal(out["roi_heads.box_predictor.cls_score.weight"][0], src["roi_head.bbox_head.fc_cls.weight"][80])
    assert torch.equal(
        out["roi_heads.box_predictor.cls_score.weight"][1:], src["roi_head.bbox_head.fc_cls.weight"][:80]
    )
    assert torch.equal(out["roi_heads.box_predictor.cls_score.bias"][0], src["roi_head.bbox_head.fc_cls.bias"][80])
    # fc_reg: 4 background rows in front, then class c at rows 4(c+1)..
    assert torch.equal(out["roi_heads.box_predictor.bbox_pred.weight"][4:], src["roi_head.bbox_head.fc_reg.weight"])
    assert not out["roi_heads.box_predictor.bbox_pred.weight"][:4].any()
    assert torch.equal(
        out["roi_heads.mask_predictor.mask_fcn_logits.weight"][1:], src["roi_head.mask_head.conv_logits.weight"]
    )
    assert torch.equal(out["backbone.body.layer3.5.norm2.bias"], src["backbone.layer3.5.gn2.bias"])
    assert torch.equal(out["backbone.fpn.layer_blocks.2.0.weight"], src["neck.fpn_convs.2.conv.weight"])


def test_reordered_class_rows_give_the_same_scores(mask_r50_source):
    """Softmax over MMDetection's row order equals ours after conversion, class for class."""
    converted, _ = convert_for(mask_r50_source, arch=MASK_R50.arch, num_classes=81)
    features = torch.randn(5, 1024)
    w, b = mask_r50_source["roi_head.bbox_head.fc_cls.weight"], mask_r50_source["roi_head.bbox_head.fc_cls.bias"]
    mmdet_scores = torch.softmax(features @ w.T + b, dim=1)[:, :80]
    ours = torch.softmax(
        features @ converted["roi_heads.box_predictor.cls_score.weight"].T
        + converted["roi_heads.box_predictor.cls_score.bias"],
        dim=1,
    )[:, 1:]
    torch.testing.assert_close(ours, mmdet_scores)


def test_a_leftover_or_missing_key_fails_with_a_report(mask_r50_source):
    extra = dict(mask_r50_source, **{"roi_head.bbox_head.fc_extra.weight": torch.zeros(3)})
    with pytest.raises(ConversionError, match="fc_extra") as info:
        convert_for(extra, arch=MASK_R50.arch, num_classes=81)
    assert info.value.unconsumed == ["roi_head.bbox_head.fc_extra.weight"]
    missing = {k: v for k, v in mask_r50_source.items() if k != "neck.fpn_convs.1.gn.bias"}
    with pytest.raises(ConversionError) as info:
        convert_for(missing, arch=MASK_R50.arch, num_classes=81)
    assert info.value.missing == ["backbone.fpn.layer_blocks.1.1.bias"]
    wrong = dict(mask_r50_source, **{"rpn_head.rpn_cls.weight": torch.zeros(9, 256, 1, 1)})
    with pytest.raises(ConversionError, match="rpn_cls") as info:
        convert_for(wrong, arch=MASK_R50.arch, num_classes=81)
    assert len(info.value.mismatched) == 1
    # a Faster R-CNN checkpoint does not fit a Mask R-CNN
    faster = {k: v for k, v in mask_r50_source.items() if "mask_head" not in k}
    with pytest.raises(ConversionError, match="mask_fcn_logits"):
        convert_for(faster, arch=MASK_R50.arch, num_classes=81)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_checkpoint_to_safetensors_to_model_is_lossless_and_deterministic(tmp_path, mask_r50_source, legacy):
    source = tmp_path / "mask_rcnn_r50_fpn_gn_ws-all_2x_coco_20200226-16acb762.pth"
    checkpoint = {
        "meta": {"mmdet_version": "2.0.0", "CLASSES": list(wszoo.COCO_CLASSES), "epoch": 24},
        "state_dict": mask_r50_source,
    }
    torch.save(checkpoint, source, _use_new_zipfile_serialization=not legacy)
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    entry, report = convert_file(source, first, report=tmp_path / "report.json")
    convert_file(source, second)
    assert entry.name == MASK_R50.name  # recognised from the file name
    assert first.read_bytes() == second.read_bytes()
    state, metadata = read_safetensors(first)
    assert metadata["wszoo_model"] == MASK_R50.name
    assert metadata["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert json.loads(metadata["classes"]) == list(wszoo.COCO_CLASSES)
    expected, _ = convert_for(mask_r50_source, arch=MASK_R50.arch, num_classes=81)
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)
    model = wszoo.get_model(MASK_R50.name, weights=first)
    # weights are adopted (assign=True), yet the frozen stages stay frozen
    assert not model.backbone.body.conv1.weight.requires_grad
    assert model.backbone.body.layer4[0].conv1.weight.requires_grad
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    mappings = json.loads((tmp_path / "report.json").read_text())["mappings"]
    assert len(mappings) == len(mask_r50_source)
    assert {
        "source": "neck.lateral_convs.0.conv.weight",
        "target": "backbone.fpn.inner_blocks.0.0.weight",
    }.items() <= next(m for m in mappings if m["source"] == "neck.lateral_convs.0.conv.weight").items()


def test_model_recognised_from_meta_or_shapes(tmp_path):
    state = synthetic_checkpoint("faster_rcnn_x50_32x4d_fpn_gn_ws-all_1x_coco")
    assert infer_arch(state) == (DetectorArch(depth=50, groups=32, base_width=4), 81)
    assert recognise(state).name == "faster_rcnn_x50_32x4d_fpn_gn_ws_all_1x_coco"
    meta = {"config": "work_dir = './work_dirs/mask_rcnn_r50_fpn_gn_ws-all_20_23_24e_coco'\n"}
    mask = {k: torch.empty(shape, device="meta") for k, shape, *_ in _keys(MASK_R50.mmdet_v2_config)}
    assert recognise(mask, meta=meta).name == "mask_rcnn_r50_fpn_gn_ws_all_20_23_24e_coco"


def test_pickle_that_would_run_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": Exploit()}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        read_checkpoint(path)
    assert not marker.exists()
    assert cli_main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_truncated_corrupt_and_wrong_files_get_clear_errors(tmp_path, mask_r50_source):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": mask_r50_source}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(truncated)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pth")
    not_state = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_state)
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_checkpoint(not_state)
    with pytest.raises(ConversionError, match="does not fit"):
        wszoo.get_model("faster_rcnn_r101_fpn_gn_ws_all_1x_coco", weights=good)


BACKBONES = [e for e in wszoo.ENTRIES if e.task == "backbone"]


@pytest.mark.parametrize("entry", BACKBONES, ids=lambda e: e.name)
def test_imagenet_backbones_convert_and_load_strictly(tmp_path, entry):
    arch = entry.arch
    state = backbone_checkpoint(arch.depth, arch.groups, fc=entry.name.startswith("resnet50"))
    published = reference_backbones().get(f"jhu/{entry.name}")
    if published:  # the key layout MMDetection consumes, exactly
        assert {k for k, *_ in published["keys"]} == {k for k in state if not k.startswith("fc.")}
    # wrapped as many ImageNet checkpoints are: {'state_dict': {'module.' + key: ...}}
    path = tmp_path / f"{entry.name}.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    model = wszoo.get_model(entry.name, weights=path)
    assert hasattr(model, "fc") == ("fc.weight" in state)
    loaded = model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key.replace("gn", "norm")], value)
    assert isinstance(model.conv1, torch.nn.Conv2d)
    assert (type(model.conv1).__name__ == "WSConv2d") == arch.weight_standardization


def test_cli_convert_without_model_and_with_report(tmp_path):
    state = synthetic_checkpoint("faster_rcnn_r50_fpn_gn_ws-all_1x_coco")
    source = tmp_path / "my_checkpoint.pth"
    torch.save({"meta": {}, "state_dict": state}, source)
    out, report = tmp_path / "out.safetensors", tmp_path / "report.json"
    assert cli_main(["convert", str(source), str(out), "--report", str(report)]) == 0
    assert read_safetensors(out)[1]["wszoo_model"] == "faster_rcnn_r50_fpn_gn_ws_all_1x_coco"
    assert json.loads(report.read_text())["num_tensors"] == len(state)
    assert (
        cli_main(
            ["convert", str(source), str(tmp_path / "x.safetensors"), "--model", "mask_rcnn_r50_fpn_gn_ws_all_2x_coco"]
        )
        == 2
    )
    assert not (tmp_path / "x.safetensors").exists()
    assert target_shapes(DetectorArch(depth=50), num_classes=81).keys() == read_safetensors(out)[0].keys()


def test_batch_script_refuses_a_file_whose_hash_does_not_match(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "convert_all", Path(__file__).resolve().parents[2] / "tools" / "convert_all.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entry = wszoo.get_entry("faster_rcnn_r50_fpn_gn_ws_all_1x_coco")
    src = tmp_path / "src"
    src.mkdir()
    torch.save({"state_dict": synthetic_checkpoint(entry.mmdet_v2_config)}, src / entry.file_name)
    out = tmp_path / "out"
    assert module.main(["--src", str(src), "--out", str(out), "--only", entry.name]) == 1
    assert "FAIL faster_rcnn_r50_fpn_gn_ws_all_1x_coco" in capsys.readouterr().out
    assert list(out.iterdir()) == []
