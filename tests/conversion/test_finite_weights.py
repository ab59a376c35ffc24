"""Weights must be finite: conversion and loading refuse NaN or infinite tensors, naming the first key."""

from __future__ import annotations

import pytest
import torch

import wszoo
from wszoo.arch import ResNetArch
from wszoo.checkpoint_io import NonFiniteWeightsError, first_non_finite, read_checkpoint, save_safetensors
from wszoo.cli import main
from wszoo.modeling.detector import build_resnet

BACKBONE = "resnet50_gn_ws"
DETECTOR = "faster_rcnn_r18_fpn_gn_ws"


def mmdet_resnet50(seed: int = 0) -> dict[str, torch.Tensor]:
    """A ResNet-50 ImageNet backbone as MMDetection names it (``gnK`` norms)."""
    native = build_resnet(arch=ResNetArch(50), num_classes=None)
    generator = torch.Generator().manual_seed(seed)
    return {k.replace("norm", "gn"): torch.randn(v.shape, generator=generator) for k, v in native.state_dict().items()}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_convert_refuses_a_non_finite_tensor_and_names_it(tmp_path, capsys, monkeypatch, bad):
    monkeypatch.delenv("WSZOO_DEBUG", raising=False)
    state = mmdet_resnet50()
    state["layer3.2.conv2.weight"][7, 3, 1, 1] = bad
    state["layer4.0.conv1.weight"][0, 0, 0, 0] = float("nan")  # a later one: the first is named
    source, out = tmp_path / "backbone.pth", tmp_path / "out.safetensors"
    torch.save({"state_dict": state}, source)
    assert main(["convert", str(source), str(out), "--model", BACKBONE]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("wszoo convert: error: ")
    assert "'layer3.2.conv2.weight' has 1 of " in err and "NaN or infinite" in err and "layer4" not in err
    assert not out.exists()


def test_get_model_refuses_non_finite_weights_from_safetensors_and_pth(tmp_path):
    state = wszoo.get_model(DETECTOR).state_dict()
    key = "roi_heads.box_predictor.bbox_pred.bias"
    state[key] = state[key].clone()
    state[key][4] = float("inf")
    native = tmp_path / "weights.safetensors"
    save_safetensors(state, native, metadata={"format": "pt"})
    with pytest.raises(NonFiniteWeightsError, match=r"'roi_heads\.box_predictor\.bbox_pred\.bias' has 1 of") as info:
        wszoo.get_model(DETECTOR, weights=native)
    assert info.value.key == key and str(native) in str(info.value)
    pth = tmp_path / "weights.pth"
    torch.save(state, pth)
    with pytest.raises(NonFiniteWeightsError, match="bbox_pred.bias"):
        wszoo.get_model(DETECTOR, weights=pth)
    with pytest.raises(NonFiniteWeightsError):
        read_checkpoint(pth)


def test_first_non_finite_names_the_first_key_in_order_and_ignores_overflowing_sums():
    state = {
        "a": torch.ones(3),
        "ints": torch.arange(5),
        "big_half": torch.full((100,), 60000.0, dtype=torch.float16),  # its sum overflows float16: still finite
        "b": torch.tensor([1.0, float("nan")], dtype=torch.bfloat16),
        "c": torch.tensor([float("inf")]),
    }
    assert first_non_finite(state) == "b"
    del state["b"]
    assert first_non_finite(state) == "c"
    del state["c"]
    assert first_non_finite(state) is None
    assert first_non_finite({}) is None
