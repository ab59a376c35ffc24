"""GN+WS Faster R-CNN and Mask R-CNN composed from torchvision's detection framework.

``GeneralizedRCNN`` is four parts -- transform, backbone, rpn, roi_heads -- and wszoo injects
its own where MMDetection's numerics differ: :class:`~wszoo.modeling.transforms.DetectionTransform`,
:class:`~wszoo.modeling.backbone.ResNetFPN`, :class:`~wszoo.modeling.rpn.MMDetRPN` and
:class:`~wszoo.modeling.roi_heads.MMDetRoIHeads`. The predictors are torchvision's own
(``FastRCNNPredictor``, ``MaskRCNNPredictor``), so class rows follow torchvision's layout:
row 0 is background and the box regression has background rows, which MMDetection's heads lack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead

from ..arch import DetectorArch, ResNetArch
from ..settings import DEFAULT_SETTINGS
from .anchors import MMDetAnchorGenerator
from .backbone import FPN, ResNet, ResNetFPN
from .layers import WSConv2d, group_norm
from .matcher import MaxIoUMatcher
from .roi_heads import ConvFCBoxHead, ConvMaskHead, MMDetRoIAlign, MMDetRoIHeads, rcnn_coder
from .rpn import MMDetRPN, rpn_coder
from .transforms import DetectionTransform

__all__ = [
    "CLASS_TENSORS",
    "ClassTensor",
    "DetectorArch",
    "ResNetArch",
    "WSRCNN",
    "build_detector",
    "build_resnet",
    "class_specific_keys",
]


@dataclass(frozen=True)
class ClassTensor:
    """A layer whose output rows are indexed by class (label 0 = background, first).

    Attributes:
        module: Its path in the detector, e.g. ``"roi_heads.box_predictor.cls_score"``.
        rows_per_class: Output rows per class (4 for class-specific box regression).
        mmdet_background: Whether MMDetection's layer has a background row too (``fc_cls``
            has it last; its regression and mask logits have none).
    """

    module: str
    rows_per_class: int
    mmdet_background: bool


# The class-specific layers of the detectors: fine-tuning re-initialises or selects their rows,
# conversion moves or adds their background rows.
CLASS_TENSORS: tuple[ClassTensor, ...] = (
    ClassTensor("roi_heads.box_predictor.cls_score", 1, mmdet_background=True),
    ClassTensor("roi_heads.box_predictor.bbox_pred", 4, mmdet_background=False),
    ClassTensor("roi_heads.mask_predictor.mask_fcn_logits", 1, mmdet_background=False),
)


def class_specific_keys() -> tuple[str, ...]:
    """State-dict keys of :data:`CLASS_TENSORS` (weights and biases)."""
    return tuple(f"{c.module}.{param}" for c in CLASS_TENSORS for param in ("weight", "bias"))


class WSRCNN(GeneralizedRCNN):
    """A two-stage detector with MMDetection's pre- and post-processing.

    Call it as torchvision's detection models: a list of (3, H, W) RGB images, uint8 (0..255)
    or float (0..1), of any sizes. In eval mode it returns one dict per image with ``boxes``
    (x1, y1, x2, y2 in input pixels), ``labels`` (1..num_classes-1; 0 is background),
    ``scores`` and, for Mask R-CNN, ``masks`` (N, 1, H, W) probabilities (MMDetection's
    binary masks are ``masks >= 0.5``). In training mode it takes ``targets`` (``boxes``,
    ``labels``, and ``masks`` (N, H, W) for Mask R-CNN, in input pixels) and returns a dict of
    losses.

    In eval mode on the CPU, a batch runs through the network
    :attr:`images_per_cpu_pass` images at a time (default 1): the cost of a CPU forward is
    memory traffic through the caches, and one image's activations stay in them where a batch's
    do not (profiled on Faster R-50 at 512x768 with one thread: GroupNorm and the residual adds
    of a batch of four took 2.1x and 1.7x the time per image of single passes; end to end
    ``benchmarks/inference_levers.py`` compares both). So a batch costs what its
    images cost one by one, and each image's detections are exactly those of a call on it
    alone. ``None`` runs the whole batch at once (as on a GPU, where batching fills the device).
    """

    images_per_cpu_pass: Optional[int] = 1

    def forward(
        self, images: Union[Sequence[Tensor], Tensor], targets: Optional[list[dict[str, Tensor]]] = None
    ) -> Union[dict[str, Tensor], list[dict[str, Tensor]]]:
        images = _check_images(images)
        if self.training:
            _check_targets(targets, len(images), with_mask=self.roi_heads.has_mask())
        step = self.images_per_cpu_pass
        if not self.training and step is not None and len(images) > step and images[0].device.type == "cpu":
            return [
                result for start in range(0, len(images), step) for result in self._run(images[start : start + step])
            ]
        return self._run(images, targets)

    def _run(
        self, images: list[Tensor], targets: Optional[list[dict[str, Tensor]]] = None
    ) -> Union[dict[str, Tensor], list[dict[str, Tensor]]]:
        image_list, targets, metas = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        proposals, rpn_losses = self.rpn(image_list, features, targets)
        if self.training:
            _, roi_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
            return {**rpn_losses, **roi_losses}
        return self.roi_heads.predict(features, proposals, metas)


def _check_images(images) -> list[Tensor]:
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ValueError(
                f"expected a list of (3, H, W) image tensors or one (N, 3, H, W) batch; got a tensor of shape "
                f"{tuple(images.shape)}"
            )
        images = list(images)
    if not isinstance(images, (list, tuple)) or len(images) == 0:
        raise TypeError(f"expected a non-empty list of (3, H, W) image tensors, got {type(images).__name__}")
    for index, image in enumerate(images):
        _check_image(image, index)
    return list(images)


def _check_image(image, index: int) -> None:
    if not isinstance(image, Tensor):
        raise TypeError(
            f"image {index} is a {type(image).__name__}, not a torch.Tensor; convert it first "
            "(e.g. torchvision.io.read_image or torchvision.transforms.v2.functional.to_image)"
        )
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(
            f"image {index} has shape {tuple(image.shape)}; expected (3, H, W) RGB "
            "(convert grayscale or RGBA to RGB first)"
        )
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"image {index} is empty: shape {tuple(image.shape)}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(f"image {index} has dtype {image.dtype}; expected uint8 (0..255) or float (0..1)")
    if image.is_floating_point() and not bool(torch.isfinite(image).all()):
        raise ValueError(f"image {index} contains NaN or infinite values")
    if image.is_floating_point():
        low, high = float(image.amin()), float(image.amax())
        if low < -1e-3 or high > 1.0 + 1e-3:
            raise ValueError(
                f"float image {index} has values in [{low:.2f}, {high:.2f}]; float images must be in "
                "[0, 1], not normalised (pass uint8 for 0..255; the model normalises itself)"
            )


def _check_targets(targets, num_images: int, *, with_mask: bool) -> None:
    if targets is None or len(targets) != num_images:
        got = "None" if targets is None else f"{len(targets)} targets"
        raise ValueError(f"training needs one target dict per image: {num_images} images, {got}")
    for index, target in enumerate(targets):
        boxes = target.get("boxes") if isinstance(target, dict) else None
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"target {index}: 'boxes' must be a float tensor of shape (N, 4)")
        if not boxes.is_floating_point():
            raise TypeError(f"target {index}: 'boxes' must be floating point, got {boxes.dtype}")
        labels = target.get("labels")
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != boxes.shape[:1]:
            raise ValueError(f"target {index}: 'labels' must be an int64 tensor of shape ({boxes.shape[0]},)")
        if bool((boxes[:, 2:] <= boxes[:, :2]).any()):
            raise ValueError(f"target {index}: every box needs x2 > x1 and y2 > y1")
        if with_mask and not (isinstance(target.get("masks"), Tensor) and target["masks"].dim() == 3):
            raise ValueError(f"target {index}: Mask R-CNN training needs 'masks' of shape (N, H, W)")


def build_resnet(*, arch: ResNetArch, num_classes: Optional[int] = None) -> ResNet:
    """A GN+WS (or GN-only) ResNet / ResNeXt.

    Args:
        arch: Depth, groups, width per group and whether convs are weight-standardized.
        num_classes: ImageNet classifier size, or None for a feature extractor.
    """
    conv = WSConv2d if arch.weight_standardization else nn.Conv2d
    return ResNet(
        depth=arch.depth,
        groups=arch.groups,
        base_width=arch.base_width,
        conv_layer=conv,
        norm_layer=group_norm,
        num_classes=num_classes,
    )


def build_detector(
    *,
    arch: DetectorArch,
    num_classes: int = 81,
    trainable_backbone_layers: int = 3,
    score_thresh: float = DEFAULT_SETTINGS.score_thresh,
    nms_thresh: float = DEFAULT_SETTINGS.nms_thresh,
    detections_per_img: int = DEFAULT_SETTINGS.detections_per_img,
    resize_backend: str = "auto",
    image_scale: tuple[int, int] = DEFAULT_SETTINGS.image_scale,
    rpn_pre_nms_top_n_test: int = DEFAULT_SETTINGS.rpn_pre_nms_top_n,
    rpn_post_nms_top_n_test: int = DEFAULT_SETTINGS.rpn_post_nms_top_n,
    box_batch_size_per_image: int = 512,
    mask_format: str = "probs",
    images_per_cpu_pass: Optional[int] = 1,
) -> WSRCNN:
    """Builds a GN+WS Faster or Mask R-CNN with MMDetection v2's test settings.

    Args:
        arch: The architecture.
        num_classes: Classes including background (81 for COCO: labels 1..80).
        trainable_backbone_layers: Backbone stages trained, counted from the last (0..5);
            3 freezes the stem and layer1, as the configs' ``frozen_stages=1``.
        score_thresh: R-CNN score threshold (strict ``>``).
        nms_thresh: R-CNN class-wise NMS IoU threshold.
        detections_per_img: Detections kept per image.
        resize_backend: ``"auto"``, ``"cv2"`` or ``"torch"`` (see :mod:`wszoo.modeling.transforms`).
        image_scale: Keep-ratio resize target (long side, short side).
        rpn_pre_nms_top_n_test: Proposals kept per level before NMS at test time.
        rpn_post_nms_top_n_test: Proposals kept after NMS at test time.
        box_batch_size_per_image: RoIs sampled per image for the R-CNN losses.
        mask_format: Mask R-CNN's masks in eval mode: ``"probs"`` (torchvision's (N, 1, H, W)
            float32 probabilities) or ``"bool"`` (MMDetection's binary masks (N, H, W),
            ``probability >= 0.5``, pasted directly: a quarter of the memory).
        images_per_cpu_pass: In eval mode on the CPU, images per pass through the network
            (see :class:`WSRCNN`); None: the whole batch at once.

    The defaults are the configs' (``nms_pre=1000``, ``max_per_img=1000``, ``num=512``); smaller
    values trade accuracy for speed (the tests use them to stay fast on a CPU).
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes counts background too and must be an int >= 2, got {num_classes!r}")
    if mask_format not in ("probs", "bool"):
        raise ValueError(f"mask_format must be 'probs' or 'bool', got {mask_format!r}")
    if not 0 <= trainable_backbone_layers <= 5:
        raise ValueError(f"trainable_backbone_layers must be in 0..5, got {trainable_backbone_layers}")
    conv = WSConv2d if arch.weight_standardization else nn.Conv2d
    body = build_resnet(arch=arch.backbone)
    _freeze_stages(body, trainable_backbone_layers)
    backbone = ResNetFPN(body, FPN(body.out_channels, 256, conv_layer=conv, norm_layer=group_norm))
    anchors = MMDetAnchorGenerator()
    rpn = MMDetRPN(
        anchors,
        RPNHead(256, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_top_n={"training": 2000, "testing": rpn_pre_nms_top_n_test},
        post_nms_top_n={"training": 1000, "testing": rpn_post_nms_top_n_test},
        nms_thresh=DEFAULT_SETTINGS.rpn_nms_thresh,
    )
    rpn.box_coder = rpn_coder()
    # train_cfg.rpn.assigner of both configs: pos 0.7, neg 0.3, min_pos_iou 0.3, low-quality on
    # (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/configs/_base_/models/faster-rcnn_r50_fpn.py#L64-L71).
    rpn.proposal_matcher = MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3)
    roi_heads = MMDetRoIHeads(
        MMDetRoIAlign(7),
        ConvFCBoxHead(256, conv_layer=conv),
        FastRCNNPredictor(1024, num_classes),
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=box_batch_size_per_image,
        positive_fraction=0.25,
        bbox_reg_weights=None,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
    )
    roi_heads.box_coder = rcnn_coder()
    # train_cfg.rcnn.assigner: 0.5 / 0.5 / min_pos_iou 0.5; low-quality matching is off in Faster
    # R-CNN's config and on in Mask R-CNN's
    # (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/configs/_base_/models/faster-rcnn_r50_fpn.py#L86-L93,
    # https://github.com/open-mmlab/mmdetection/blob/v3.3.0/configs/_base_/models/mask-rcnn_r50_fpn.py#L100-L107).
    roi_heads.proposal_matcher = MaxIoUMatcher(0.5, 0.5, min_pos_iou=0.5, match_low_quality=arch.with_mask)
    if arch.with_mask:
        roi_heads.mask_roi_pool = MMDetRoIAlign(14)
        roi_heads.mask_head = ConvMaskHead(256, conv_layer=conv)
        roi_heads.mask_predictor = MaskRCNNPredictor(256, 256, num_classes)
        roi_heads.mask_format = mask_format
    if images_per_cpu_pass is not None and (
        isinstance(images_per_cpu_pass, bool) or not isinstance(images_per_cpu_pass, int) or images_per_cpu_pass < 1
    ):
        raise ValueError(f"images_per_cpu_pass must be an integer >= 1 or None, got {images_per_cpu_pass!r}")
    transform = DetectionTransform(scale=image_scale, resize_backend=resize_backend)
    model = WSRCNN(backbone, rpn, roi_heads, transform)
    model.images_per_cpu_pass = images_per_cpu_pass
    return model


def _freeze_stages(body: ResNet, trainable_layers: int) -> None:
    stages = body.stages()  # stem, layer1..layer4
    for stage in stages[: len(stages) - trainable_layers]:
        for parameter in stage.parameters():
            parameter.requires_grad_(False)
