"""Mask output formats, vectorised pasting and mixed precision: same answers, cheaper forms."""

from __future__ import annotations

import copy

import pytest
import torch

import wszoo
from wszoo.modeling.detector import build_detector
from wszoo.modeling.layers import WSConv2d, fold_weight_standardization
from wszoo.modeling.transforms import binary_masks, paste_masks

SMALL = dict(image_scale=(160, 128), rpn_post_nms_top_n_test=50, score_thresh=0.0)


def _boxes(generator: torch.Generator, count: int, height: int, width: int) -> torch.Tensor:
    xy = torch.rand(count, 2, generator=generator) * torch.tensor([width, height])
    wh = torch.rand(count, 2, generator=generator) * torch.tensor([width, height]) * 0.6
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    boxes[0] = torch.tensor([10.0, 10.0, 10.0, 40.0])  # zero width: MMDetection maps inf to 0
    boxes[1] = torch.tensor([0.0, 0.0, float(width), float(height)])  # the whole image
    boxes[2] = torch.tensor([3.3, 7.7, 4.1, 8.2])  # smaller than a pixel
    return boxes


@pytest.mark.parametrize("budget", [1 << 24, 4000, 1])
def test_vectorised_paste_is_bit_identical_to_the_per_instance_paste(budget: int):
    g = torch.Generator().manual_seed(0)
    height, width = 120, 170
    masks = torch.rand(40, 28, 28, generator=g)
    boxes = _boxes(g, 40, height, width)
    reference = paste_masks(masks, boxes, (height, width), vectorised=False)
    assert reference.shape == (40, 1, height, width) and reference.dtype == torch.float32
    vectorised = paste_masks(masks, boxes, (height, width), vectorised=True, chunk_elements=budget)
    assert torch.equal(vectorised, reference)
    for vec in (False, True):
        binary = paste_masks(masks, boxes, (height, width), threshold=0.5, vectorised=vec, chunk_elements=budget)
        assert binary.dtype == torch.bool and torch.equal(binary, reference[:, 0] >= 0.5)
    # Nothing is pasted left of an instance's floor(x0) - 1.
    left = max(int(boxes[3, 0].floor()) - 1, 0)
    assert not reference[3, 0, :, :left].any()


def test_empty_paste_has_the_right_shapes():
    masks, boxes = torch.zeros(0, 28, 28), torch.zeros(0, 4)
    assert paste_masks(masks, boxes, (5, 7)).shape == (0, 1, 5, 7)
    assert paste_masks(masks, boxes, (5, 7), threshold=0.5, vectorised=True).shape == (0, 5, 7)


def _mask_model(**kwargs):
    torch.manual_seed(0)
    return build_detector(arch=wszoo.get_entry("mask_rcnn_r18_fpn_gn_ws").arch, **SMALL, **kwargs).eval()


def _image(seed: int, height: int = 96, width: int = 128) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)


def test_bool_mask_format_equals_probabilities_thresholded():
    probs_model = _mask_model()
    bool_model = _mask_model(mask_format="bool")
    bool_model.load_state_dict(probs_model.state_dict())
    with torch.no_grad():
        probs = probs_model([_image(1)])[0]
        binary = bool_model([_image(1)])[0]
    assert probs["masks"].dtype == torch.float32 and probs["masks"].shape[1] == 1
    assert binary["masks"].dtype == torch.bool and binary["masks"].shape == (len(binary["boxes"]), 96, 128)
    assert len(binary["boxes"]) > 0
    assert torch.equal(binary["masks"], probs["masks"][:, 0] >= 0.5)
    assert torch.equal(binary_masks(probs["masks"]), binary["masks"])
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(binary[key], probs[key])


def test_mask_format_is_checked():
    with pytest.raises(ValueError, match="mask_format must be 'probs' or 'bool'"):
        _mask_model(mask_format="binary")


@pytest.mark.parametrize("name", ["faster_rcnn_r18_fpn_gn_ws", "mask_rcnn_r18_fpn_gn_ws"])
def test_bf16_autocast_with_channels_last_returns_float32(name: str):
    torch.manual_seed(0)
    model = build_detector(arch=wszoo.get_entry(name).arch, **SMALL).eval()
    model = model.to(memory_format=torch.channels_last)
    images = [_image(2), _image(3, 128, 80)]
    with torch.no_grad():
        fp32 = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(images)
    for out, ref, image in zip(low, fp32, images):
        assert out["boxes"].dtype == torch.float32 and out["scores"].dtype == torch.float32
        assert out["labels"].dtype == torch.int64 and len(out["boxes"]) > 0
        height, width = image.shape[1:]
        assert bool((out["boxes"][:, 2] <= width).all()) and bool((out["boxes"][:, 3] <= height).all())
        if "masks" in out:
            assert out["masks"].dtype == torch.float32 and out["masks"].shape[-2:] == (height, width)
        # Same image, same ballpark: bf16 moves scores a little, not the whole answer.
        assert abs(len(out["boxes"]) - len(ref["boxes"])) <= max(2, len(ref["boxes"]) // 4)


@pytest.mark.slow
def test_backbone_compiles_without_graph_breaks_from_the_ws_cache():
    model = build_detector(arch=wszoo.get_entry("faster_rcnn_r18_fpn_gn_ws").arch).eval()
    torch._dynamo.reset()
    with torch.no_grad():
        explanation = torch._dynamo.explain(model.backbone)(torch.randn(1, 3, 64, 96))
    assert explanation.graph_break_count == 0, [r.reason for r in explanation.break_reasons]
    torch._dynamo.reset()


def test_folding_weight_standardization_keeps_the_detections():
    model = _mask_model()
    folded = fold_weight_standardization(copy.deepcopy(model))
    assert not any(isinstance(m, WSConv2d) for m in folded.modules())
    assert sum(isinstance(m, WSConv2d) for m in model.modules()) > 20
    images = [_image(4), _image(5, 80, 112)]
    with torch.no_grad():
        want, got = model(images), folded(images)
    for a, b in zip(want, got):
        assert len(a["boxes"]) > 0
        for key in a:
            assert torch.equal(a[key], b[key]), key
