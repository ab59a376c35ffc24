"""One builder per zoo entry (the names of ``wszoo.list_models()``), over one private factory.

Builders are keyword-only and never touch the network unless weights are asked for. Docstrings
quote the published COCO val2017 AP (``tests/test_zoo.py`` checks them against the table).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from .arch import DetectorArch
from .hub.weights import WeightsArg, load_state_dict, resolve_weights, weights_file
from .model_spec import check_spec, read_spec, spec_build_kwargs
from .modeling.detector import build_detector, build_resnet
from .registry import get_entry
from .zoo import ZooEntry

# The builders, one per zoo entry: what ``hubconf.py`` and ``wszoo`` re-export. ``get_model`` and
# ``get_model_info`` are public too, through the package root, but are not hub entry points.
__all__ = [
    "faster_rcnn_r50_fpn_gn_ws_all_1x_coco",
    "faster_rcnn_r101_fpn_gn_ws_all_1x_coco",
    "faster_rcnn_x50_32x4d_fpn_gn_ws_all_1x_coco",
    "faster_rcnn_x101_32x4d_fpn_gn_ws_all_1x_coco",
    "mask_rcnn_r50_fpn_gn_ws_all_2x_coco",
    "mask_rcnn_r101_fpn_gn_ws_all_2x_coco",
    "mask_rcnn_x50_32x4d_fpn_gn_ws_all_2x_coco",
    "mask_rcnn_x101_32x4d_fpn_gn_ws_all_2x_coco",
    "mask_rcnn_r50_fpn_gn_ws_all_20_23_24e_coco",
    "mask_rcnn_r101_fpn_gn_ws_all_20_23_24e_coco",
    "mask_rcnn_x50_32x4d_fpn_gn_ws_all_20_23_24e_coco",
    "mask_rcnn_x101_32x4d_fpn_gn_ws_all_20_23_24e_coco",
    "resnet50_gn_ws",
    "resnet101_gn_ws",
    "resnext50_32x4d_gn_ws",
    "resnext101_32x4d_gn_ws",
    "resnext50_32x4d_gn",
    "resnext101_32x4d_gn",
    "faster_rcnn_r18_fpn_gn_ws",
    "mask_rcnn_r18_fpn_gn_ws",
]


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Builds a zoo model by name or alias; ``weights="DEFAULT"`` loads the published weights.

    Args:
        name: A name of ``list_models()``, or an MMDetection v2/v3 config name.
        **kwargs: The builder's keyword arguments (``weights``, ``pretrained``, ``num_classes``,
            ``progress``, ...); see :func:`_build`.
    """
    return _build(get_entry(name).name, **kwargs)


def get_model_info(name: str) -> ZooEntry:
    """The zoo entry (published metrics, URLs, hash, classes) of a model name or alias."""
    return get_entry(name)


def _build(
    name: str,
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **kwargs: Any,
) -> nn.Module:
    """Builds zoo entry ``name``, loading ``weights`` strictly if given.

    Args:
        name: Zoo name or alias.
        weights: None (random init), ``"DEFAULT"`` (published weights), a zoo entry, the path of
            a ``.pth`` (MMDetection or wszoo layout) or ``.safetensors`` file, or
            ``"hf-hub:ORG/REPO[@REVISION]"``. Weights written by ``wszoo train`` bring their
            class count and build options (image scale, test settings; see
            :mod:`wszoo.model_spec`): ``num_classes`` may be left out, options given here win,
            and ``name`` must have their architecture.
        pretrained: Same as ``weights="DEFAULT"`` (torch.hub habit).
        progress: Show a download progress bar.
        num_classes: Classes including background (detectors; default 81 for COCO), or the
            classifier size of a backbone (default: none, or the checkpoint's).
        **kwargs: Passed to :func:`wszoo.modeling.detector.build_detector` (e.g. ``score_thresh``,
            ``trainable_backbone_layers``, ``resize_backend``, ``image_scale``).
    """
    entry = get_entry(name)
    resolved = resolve_weights(entry, weights, pretrained=pretrained)
    if isinstance(entry.arch, DetectorArch):
        return _detector(entry, resolved, progress=progress, num_classes=num_classes, **kwargs)
    if kwargs:
        raise TypeError(f"{entry.name} is a backbone; unexpected arguments {sorted(kwargs)}")
    return _backbone(entry, resolved, progress=progress, num_classes=num_classes)


def _check_options(kwargs: dict[str, Any]) -> None:
    """Refuses build options out of range before anything is built, naming the range."""
    scale = kwargs.get("image_scale")
    if scale is not None and (
        len(tuple(scale)) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in scale)
    ):
        raise ValueError(f"image_scale must be two integers >= 1 (long side, short side), got {scale!r}")
    for name in ("score_thresh", "nms_thresh"):
        value = kwargs.get(name)
        if value is not None and not 0.0 <= value <= 1.0:  # also refuses NaN
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    for name in ("detections_per_img", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "box_batch_size_per_image"):
        value = kwargs.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _detector(entry: ZooEntry, resolved, *, progress: bool, num_classes: Optional[int], **kwargs: Any) -> nn.Module:
    file = weights_file(entry, resolved)  # a Hub repository is downloaded once, here
    spec = read_spec(file) if file is not None else None
    if spec is not None:  # written by `wszoo train`: its classes and build options, unless given
        check_spec(entry, spec, what=str(file), num_classes=num_classes)
        num_classes, kwargs = spec["num_classes"], {**spec_build_kwargs(spec), **kwargs}
    if file is not None:
        resolved = file
    _check_options(kwargs)
    if isinstance(resolved, ZooEntry) and num_classes not in (None, entry.num_classes):
        raise ValueError(
            f"{entry.name}'s published weights have {entry.num_classes} classes (with background), "
            f"num_classes={num_classes} was given; to fine-tune on other classes see wszoo.training.finetune "
            "(or `wszoo train --weights DEFAULT`)"
        )
    num_classes = num_classes or entry.num_classes or 81
    if resolved is None:
        return build_detector(arch=entry.arch, num_classes=num_classes, **kwargs)
    state_dict = load_state_dict(entry, resolved, num_classes=num_classes, progress=progress)
    # Weights are about to replace every parameter: build on the meta device (no random
    # initialisation, no memory), then adopt the loaded tensors with assign=True. The parameters
    # keep their requires_grad (frozen stages stay frozen).
    with torch.device("meta"):
        model = build_detector(arch=entry.arch, num_classes=num_classes, **kwargs)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.transform.reset_buffers()  # not in the state dict
    return model


def _backbone(entry: ZooEntry, resolved, *, progress: bool, num_classes: Optional[int]) -> nn.Module:
    state_dict = load_state_dict(entry, resolved, progress=progress) if resolved is not None else None
    if state_dict is not None and num_classes is None and "fc.weight" in state_dict:
        num_classes = state_dict["fc.weight"].shape[0]  # keep the checkpoint's ImageNet classifier
    model = build_resnet(arch=entry.arch, num_classes=num_classes)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True, assign=True)
    return model


def faster_rcnn_r50_fpn_gn_ws_all_1x_coco(**kwargs: Any) -> nn.Module:
    """Faster R-CNN R-50-FPN GN+WS, 1x: COCO val2017 box AP 39.7."""
    return _build("faster_rcnn_r50_fpn_gn_ws_all_1x_coco", **kwargs)


def faster_rcnn_r101_fpn_gn_ws_all_1x_coco(**kwargs: Any) -> nn.Module:
    """Faster R-CNN R-101-FPN GN+WS, 1x: COCO val2017 box AP 41.7."""
    return _build("faster_rcnn_r101_fpn_gn_ws_all_1x_coco", **kwargs)


def faster_rcnn_x50_32x4d_fpn_gn_ws_all_1x_coco(**kwargs: Any) -> nn.Module:
    """Faster R-CNN X-50-32x4d-FPN GN+WS, 1x: COCO val2017 box AP 40.7."""
    return _build("faster_rcnn_x50_32x4d_fpn_gn_ws_all_1x_coco", **kwargs)


def faster_rcnn_x101_32x4d_fpn_gn_ws_all_1x_coco(**kwargs: Any) -> nn.Module:
    """Faster R-CNN X-101-32x4d-FPN GN+WS, 1x: COCO val2017 box AP 42.1."""
    return _build("faster_rcnn_x101_32x4d_fpn_gn_ws_all_1x_coco", **kwargs)


def mask_rcnn_r50_fpn_gn_ws_all_2x_coco(**kwargs: Any) -> nn.Module:
    """Mask R-CNN R-50-FPN GN+WS, 2x: COCO val2017 box AP 40.6, mask AP 36.6."""
    return _build("mask_rcnn_r50_fpn_gn_ws_all_2x_coco", **kwargs)


def mask_rcnn_r101_fpn_gn_ws_all_2x_coco(**kwargs: Any) -> nn.Module:
    """Mask R-CNN R-101-FPN GN+WS, 2x: COCO val2017 box AP 42.0, mask AP 37.7."""
    return _build("mask_rcnn_r101_fpn_gn_ws_all_2x_coco", **kwargs)


def mask_rcnn_x50_32x4d_fpn_gn_ws_all_2x_coco(**kwargs: Any) -> nn.Module:
    """Mask R-CNN X-50-32x4d-FPN GN+WS, 2x: COCO val2017 box AP 41.1, mask AP 37.0."""
    return _build("mask_rcnn_x50_32x4d_fpn_gn_ws_all_2x_coco", **kwargs)


def mask_rcnn_x101_32x4d_fpn_gn_ws_all_2x_coco(**kwargs: Any) -> nn.Module:
    """Mask R-CNN X-101-32x4d-FPN GN+WS, 2x: COCO val2017 box AP 42.1, mask AP 37.9."""
    return _build("mask_rcnn_x101_32x4d_fpn_gn_ws_all_2x_coco", **kwargs)


def mask_rcnn_r50_fpn_gn_ws_all_20_23_24e_coco(**kwargs: Any) -> nn.Module:
    """Mask R-CNN R-50-FPN GN+WS, 20-23-24e: COCO val2017 box AP 41.1, mask AP 37.1."""
    return _build("mask_rcnn_r50_fpn_gn_ws_all_20_23_24e_coco", **kwargs)


def mask_rcnn_r101_fpn_gn_ws_all_20_23_24e_coco(**kwargs: Any) -> nn.Module:
    """Mask R-CNN R-101-FPN GN+WS, 20-23-24e: COCO val2017 box AP 43.1, mask AP 38.6."""
    return _build("mask_rcnn_r101_fpn_gn_ws_all_20_23_24e_coco", **kwargs)


def mask_rcnn_x50_32x4d_fpn_gn_ws_all_20_23_24e_coco(**kwargs: Any) -> nn.Module:
    """Mask R-CNN X-50-32x4d-FPN GN+WS, 20-23-24e: COCO val2017 box AP 42.1, mask AP 38.0."""
    return _build("mask_rcnn_x50_32x4d_fpn_gn_ws_all_20_23_24e_coco", **kwargs)


def mask_rcnn_x101_32x4d_fpn_gn_ws_all_20_23_24e_coco(**kwargs: Any) -> nn.Module:
    """Mask R-CNN X-101-32x4d-FPN GN+WS, 20-23-24e: COCO val2017 box AP 42.7, mask AP 38.5."""
    return _build("mask_rcnn_x101_32x4d_fpn_gn_ws_all_20_23_24e_coco", **kwargs)


def resnet50_gn_ws(**kwargs: Any) -> nn.Module:
    """ImageNet R-50 with GN+WS (open-mmlab://jhu/resnet50_gn_ws); no published accuracy."""
    return _build("resnet50_gn_ws", **kwargs)


def resnet101_gn_ws(**kwargs: Any) -> nn.Module:
    """ImageNet R-101 with GN+WS (open-mmlab://jhu/resnet101_gn_ws); no published accuracy."""
    return _build("resnet101_gn_ws", **kwargs)


def resnext50_32x4d_gn_ws(**kwargs: Any) -> nn.Module:
    """ImageNet X-50-32x4d with GN+WS (open-mmlab://jhu/resnext50_32x4d_gn_ws); no published accuracy."""
    return _build("resnext50_32x4d_gn_ws", **kwargs)


def resnext101_32x4d_gn_ws(**kwargs: Any) -> nn.Module:
    """ImageNet X-101-32x4d with GN+WS (open-mmlab://jhu/resnext101_32x4d_gn_ws); no published accuracy."""
    return _build("resnext101_32x4d_gn_ws", **kwargs)


def resnext50_32x4d_gn(**kwargs: Any) -> nn.Module:
    """ImageNet X-50-32x4d with GN (open-mmlab://jhu/resnext50_32x4d_gn); no published accuracy."""
    return _build("resnext50_32x4d_gn", **kwargs)


def resnext101_32x4d_gn(**kwargs: Any) -> nn.Module:
    """ImageNet X-101-32x4d with GN (open-mmlab://jhu/resnext101_32x4d_gn); no published accuracy."""
    return _build("resnext101_32x4d_gn", **kwargs)


def faster_rcnn_r18_fpn_gn_ws(**kwargs: Any) -> nn.Module:
    """GN+WS Faster R-CNN R-18-FPN, a small architecture without published weights."""
    return _build("faster_rcnn_r18_fpn_gn_ws", **kwargs)


def mask_rcnn_r18_fpn_gn_ws(**kwargs: Any) -> nn.Module:
    """GN+WS Mask R-CNN R-18-FPN, a small architecture without published weights."""
    return _build("mask_rcnn_r18_fpn_gn_ws", **kwargs)
