"""RPN, RoI pooling and R-CNN heads of the GN+WS detectors, as seams in torchvision's classes.

torchvision's ``RegionProposalNetwork`` and ``RoIHeads`` are kept (their training code:
matching, sampling, losses). What differs from MMDetection at test time is replaced:

* anchors: MMDetection's fixed strides and unrounded base anchors (:class:`MMDetAnchorGenerator`);
* proposal filtering: sigmoid, per-level sort, drop empty boxes, per-level NMS exactly as
  MMDetection's ``RPNHead`` (:class:`MMDetRPN`);
* RoI pooling: ``aligned=True``, adaptive sampling, MMDetection's level mapping
  (:class:`MMDetRoIAlign`);
* R-CNN post-processing, mask pasting and the mapping back to the input image
  (:meth:`MMDetRoIHeads.predict`);
* in training, the box losses: MMDetection v2's configs use ``L1Loss`` on the deltas in both
  heads where torchvision uses smooth L1 with beta 1/9 (:func:`l1_box_loss`). Normalisation is
  the same: the sum over positives divided by the number of sampled anchors / RoIs.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import roi_align

from .box_ops import DeltaXYWHCoder, batched_nms, clip_boxes
from .layers import ConvLayer, ConvNormAct, NormLayer, WSConv2d, group_norm
from .transforms import ImageMeta, paste_masks

__all__ = [
    "MaxIoUMatcher",
    "MMDetAnchorGenerator",
    "MMDetRPN",
    "MMDetRoIAlign",
    "ConvFCBoxHead",
    "ConvMaskHead",
    "MMDetRoIHeads",
]


class MMDetAnchorGenerator(nn.Module):
    """MMDetection v2's ``AnchorGenerator`` (scales [8], ratios [0.5, 1, 2], strides 4..64).

    Unlike torchvision's generator, base anchors are not rounded and the stride of each level
    is fixed rather than derived from ``image_size // feature_size`` (which is wrong for P6 of
    odd-sized inputs). Base anchors are centred on (0, 0); ``ratio = h / w``, so anchor 0 of a
    location is the wide one; order is (y, x, anchor)
    (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/task_modules/prior_generators/anchor_generator.py#L222-L260).
    """

    def __init__(
        self,
        strides: Sequence[int] = (4, 8, 16, 32, 64),
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        scales: Sequence[float] = (8.0,),
    ) -> None:
        super().__init__()
        self.strides = tuple(strides)
        self.ratios = tuple(ratios)
        self.scales = tuple(scales)

    def num_anchors_per_location(self) -> list[int]:
        return [len(self.ratios) * len(self.scales)] * len(self.strides)

    def base_anchors(self, stride: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        ratios = torch.tensor(self.ratios, dtype=torch.float32)
        scales = torch.tensor(self.scales, dtype=torch.float32)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        ws = (stride * w_ratios[:, None] * scales[None, :]).view(-1)
        hs = (stride * h_ratios[:, None] * scales[None, :]).view(-1)
        anchors = torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)
        return anchors.to(device=device, dtype=dtype)

    def grid_anchors(self, size: tuple[int, int], stride: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """All anchors of one level of shape ``size`` (H, W), index (y * W + x) * A + a."""
        shift_x = torch.arange(0, size[1], device=device).to(dtype) * stride
        shift_y = torch.arange(0, size[0], device=device).to(dtype) * stride
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
        xx, yy = xx.reshape(-1), yy.reshape(-1)
        shifts = torch.stack([xx, yy, xx, yy], dim=-1)
        return (self.base_anchors(stride, dtype, device)[None, :, :] + shifts[:, None, :]).view(-1, 4)

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        if len(feature_maps) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} feature maps, got {len(feature_maps)}")
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        levels = [
            self.grid_anchors(tuple(f.shape[-2:]), s, dtype, device) for f, s in zip(feature_maps, self.strides)
        ]
        anchors = torch.cat(levels)
        return [anchors for _ in range(image_list.tensors.shape[0])]


class MaxIoUMatcher(det_utils.Matcher):
    """torchvision's ``Matcher`` with the ``min_pos_iou`` rule of MMDetection's ``MaxIoUAssigner``.

    Low-quality matches (each ground truth's best anchors) are only made for ground truths whose
    best IoU is at least ``min_pos_iou`` (0.3 for the RPN of these configs); torchvision makes
    them whatever the IoU
    (https://github.com/open-mmlab/mmdetection/blob/v2.28.2/mmdet/core/bbox/assigners/max_iou_assigner.py#L195-L207).
    """

    def __init__(self, high_threshold: float, low_threshold: float, *, min_pos_iou: float) -> None:
        super().__init__(high_threshold, low_threshold, allow_low_quality_matches=True)
        self.min_pos_iou = min_pos_iou

    def set_low_quality_matches_(self, matches: Tensor, all_matches: Tensor, match_quality_matrix: Tensor) -> None:
        best, _ = match_quality_matrix.max(dim=1)
        eligible = (match_quality_matrix == best[:, None]) & (best >= self.min_pos_iou)[:, None]
        predictions = torch.where(eligible)[1]
        matches[predictions] = all_matches[predictions]


class MMDetRPN(RegionProposalNetwork):
    """torchvision's RPN with MMDetection's proposal selection.

    Reproduces ``RPNHead._predict_by_feat_single`` and ``_bbox_post_process``
    (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/dense_heads/rpn_head.py#L158-L300):
    per level, sigmoid scores and, above ``pre_nms_top_n``, keep the best after a descending
    ``sort``; clip to the image; drop boxes whose width or height is not > 0; NMS per level on
    level-offset boxes; keep the best ``post_nms_top_n``.
    """

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        num_images = proposals.shape[0]
        objectness = objectness.detach().reshape(num_images, -1)
        final_boxes, final_scores = [], []
        for boxes, scores, image_shape in zip(proposals, objectness, image_shapes):
            boxes, scores, levels = self._top_per_level(boxes, scores, num_anchors_per_level)
            clip_boxes(boxes, image_shape)
            wh = boxes[:, 2:] - boxes[:, :2]
            valid = (wh[:, 0] > 0) & (wh[:, 1] > 0)
            if not bool(valid.all()):
                boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
            keep = batched_nms(boxes, scores, levels, self.nms_thresh)[: self.post_nms_top_n()]
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        return final_boxes, final_scores

    def compute_loss(
        self, objectness: Tensor, pred_bbox_deltas: Tensor, labels: list[Tensor], regression_targets: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Sigmoid cross-entropy and L1 box loss over the sampled anchors (training only)."""
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(sampled_pos, dim=0))[0]
        sampled = torch.cat([pos, torch.where(torch.cat(sampled_neg, dim=0))[0]])
        labels_, targets = torch.cat(labels, dim=0), torch.cat(regression_targets, dim=0)
        box_loss = l1_box_loss(pred_bbox_deltas[pos], targets[pos], sampled.numel())
        objectness_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels_[sampled])
        return objectness_loss, box_loss

    def _top_per_level(
        self, boxes: Tensor, logits: Tensor, num_anchors_per_level: list[int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        kept_boxes, kept_scores, kept_levels = [], [], []
        for level, (level_boxes, level_logits) in enumerate(
            zip(boxes.split(num_anchors_per_level), logits.split(num_anchors_per_level))
        ):
            scores = level_logits.sigmoid()
            if scores.numel() > self.pre_nms_top_n():
                scores, order = scores.sort(descending=True)
                scores, order = scores[: self.pre_nms_top_n()], order[: self.pre_nms_top_n()]
                level_boxes = level_boxes[order]
            kept_boxes.append(level_boxes.clone())
            kept_scores.append(scores)
            kept_levels.append(torch.full_like(scores, level, dtype=torch.int64))
        return torch.cat(kept_boxes), torch.cat(kept_scores), torch.cat(kept_levels)


class MMDetRoIAlign(nn.Module):
    """Multi-level RoIAlign with MMDetection's ``SingleRoIExtractor`` level mapping.

    A box of scale ``sqrt(w * h)`` goes to level ``floor(log2(scale / 56 + 1e-6))`` clamped to
    [0, 3] (P2..P5; P6 is never pooled), then ``roi_align(aligned=True, sampling_ratio=0)``
    (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/roi_heads/roi_extractors/single_level_roi_extractor.py#L52-L110).
    torchvision's ``roi_align`` with these arguments equals MMCV's bit for bit.

    Args:
        output_size: 7 for the box head, 14 for the mask head.
        strides: Strides of the pooled levels (their keys are '0', '1', ...).
        finest_scale: Scale mapped to the finest level.
    """

    def __init__(self, output_size: int, strides: Sequence[int] = (4, 8, 16, 32), finest_scale: int = 56) -> None:
        super().__init__()
        self.output_size = output_size
        self.strides = tuple(strides)
        self.finest_scale = finest_scale

    def map_levels(self, rois: Tensor) -> Tensor:
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        levels = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        return levels.clamp(min=0, max=len(self.strides) - 1).long()

    def forward(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: Optional[list] = None
    ) -> Tensor:
        maps = list(features.values())[: len(self.strides)]
        rois = torch.cat(
            [torch.cat([b.new_full((b.shape[0], 1), float(i)), b], dim=1) for i, b in enumerate(boxes)]
        )
        out = maps[0].new_zeros((rois.shape[0], maps[0].shape[1], self.output_size, self.output_size))
        levels = self.map_levels(rois)
        for level, (feature, stride) in enumerate(zip(maps, self.strides)):
            index = (levels == level).nonzero(as_tuple=False).squeeze(1)
            if index.numel() == 0:
                continue
            out[index] = roi_align(
                feature,
                rois[index],
                output_size=self.output_size,
                spatial_scale=1.0 / stride,
                sampling_ratio=0,
                aligned=True,
            ).to(out.dtype)
        return out


class ConvFCBoxHead(nn.Sequential):
    """``Shared4Conv1FCBBoxHead``'s shared part: 4 x (3x3 conv, norm, ReLU), flatten, fc, ReLU.

    Children: ``0``..``3`` conv blocks, ``4`` flatten, ``5`` fc, ``6`` ReLU.
    """

    def __init__(
        self,
        in_channels: int = 256,
        *,
        roi_size: int = 7,
        num_convs: int = 4,
        conv_channels: int = 256,
        fc_channels: int = 1024,
        conv_layer: ConvLayer = WSConv2d,
        norm_layer: NormLayer = group_norm,
    ) -> None:
        layers: list[nn.Module] = []
        for index in range(num_convs):
            channels = in_channels if index == 0 else conv_channels
            layers.append(ConvNormAct(channels, conv_channels, 3, conv_layer=conv_layer, norm_layer=norm_layer))
        layers += [nn.Flatten(), nn.Linear(conv_channels * roi_size * roi_size, fc_channels), nn.ReLU(inplace=True)]
        super().__init__(*layers)
        self.out_channels = fc_channels


class ConvMaskHead(nn.Sequential):
    """``FCNMaskHead``'s convs: 4 x (3x3 conv, norm, ReLU); the deconv and logits live in
    torchvision's ``MaskRCNNPredictor``."""

    def __init__(
        self,
        in_channels: int = 256,
        *,
        num_convs: int = 4,
        conv_channels: int = 256,
        conv_layer: ConvLayer = WSConv2d,
        norm_layer: NormLayer = group_norm,
    ) -> None:
        super().__init__(
            *(
                ConvNormAct(
                    in_channels if index == 0 else conv_channels,
                    conv_channels,
                    3,
                    conv_layer=conv_layer,
                    norm_layer=norm_layer,
                )
                for index in range(num_convs)
            )
        )


class MMDetRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` (training unchanged) with MMDetection's test-time path.

    In eval mode :meth:`predict` reproduces ``bbox_head.predict_by_feat`` with
    ``multiclass_nms`` and ``FCNMaskHead.predict_by_feat``
    (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/roi_heads/bbox_heads/bbox_head.py#L397-L470,
    https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/layers/bbox_nms.py#L13-L95):
    softmax with the background column last, class-specific decoding clipped to the resized
    image, scores ``> score_thresh``, class-wise NMS, the best ``detections_per_img``.
    Faster R-CNN maps boxes back to the input image *before* NMS, by multiplying by the
    reciprocal scale; Mask R-CNN runs NMS on resized boxes (they are the mask RoIs) and then
    divides by the scale (``bbox_rescale = rescale if not self.with_mask``, base_roi_head.py).
    The two formulas differ in the last float bit, so both are kept.
    """

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: Optional[list[dict[str, Tensor]]] = None,
    ) -> tuple[list, dict[str, Tensor]]:
        """Training losses (torchvision's sampling and targets, MMDetection's L1 box loss).

        Inference goes through :meth:`predict`.
        """
        if not self.training:
            raise RuntimeError("MMDetRoIHeads.forward computes training losses; use predict() in eval mode")
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        class_logits, box_regression = self.box_predictor(
            self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        )
        labels_, targets_ = torch.cat(labels), torch.cat(regression_targets)
        pos = torch.where(labels_ > 0)[0]
        box_regression = box_regression.reshape(box_regression.shape[0], -1, 4)
        losses = {
            "loss_classifier": F.cross_entropy(class_logits, labels_),
            "loss_box_reg": l1_box_loss(box_regression[pos, labels_[pos]], targets_[pos], labels_.numel()),
        }
        if self.has_mask():
            positives = [torch.where(image_labels > 0)[0] for image_labels in labels]
            mask_logits = self.mask_predictor(
                self.mask_head(self.mask_roi_pool(features, [p[i] for p, i in zip(proposals, positives)], image_shapes))
            )
            losses["loss_mask"] = mask_loss(
                mask_logits,
                [p[i] for p, i in zip(proposals, positives)],
                [t["masks"] for t in targets],
                [t["labels"] for t in targets],
                [m[i] for m, i in zip(matched_idxs, positives)],
            )
        return [], losses

    def predict(
        self, features: dict[str, Tensor], proposals: list[Tensor], metas: list[ImageMeta]
    ) -> list[dict[str, Tensor]]:
        """Detections in input-image pixels: boxes, labels (1..C-1), scores[, masks]."""
        box_features = self.box_head(self.box_roi_pool(features, proposals, None))
        class_logits, box_regression = self.box_predictor(box_features)
        counts = [p.shape[0] for p in proposals]
        results = [
            self._detect(logits, deltas, rois, meta)
            for logits, deltas, rois, meta in zip(
                class_logits.split(counts), box_regression.split(counts), proposals, metas
            )
        ]
        if self.has_mask():
            self._predict_masks(features, results, metas)
        return results

    def _detect(self, logits: Tensor, deltas: Tensor, rois: Tensor, meta: ImageMeta) -> dict[str, Tensor]:
        # MMDetection keeps background last; rotating it there first makes the softmax sum in
        # MMDetection's order.
        scores = F.softmax(torch.cat([logits[:, 1:], logits[:, :1]], dim=1), dim=-1)[:, :-1]
        num_classes = scores.shape[1]
        boxes = self.box_coder.decode_single(deltas[:, 4:], rois, max_shape=meta.img_shape).view(-1, 4)
        rescale_first = not self.has_mask()
        if rescale_first:
            sx, sy = meta.scale_factor
            boxes = boxes * boxes.new_tensor([1 / sx, 1 / sy, 1 / sx, 1 / sy])
        labels = torch.arange(num_classes, device=scores.device).view(1, -1).expand_as(scores).reshape(-1)
        scores = scores.reshape(-1)
        keep = (scores > self.score_thresh).nonzero(as_tuple=False).squeeze(1)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": boxes[keep], "labels": labels[keep] + 1, "scores": scores[keep]}

    def _predict_masks(self, features: dict[str, Tensor], results: list[dict[str, Tensor]], metas) -> None:
        mask_features = self.mask_head(self.mask_roi_pool(features, [r["boxes"] for r in results], None))
        mask_logits = self.mask_predictor(mask_features)
        counts = [r["boxes"].shape[0] for r in results]
        for result, logits, meta in zip(results, mask_logits.split(counts), metas):
            probs = logits[torch.arange(logits.shape[0], device=logits.device), result["labels"]].sigmoid()
            sx, sy = meta.scale_factor
            result["boxes"] = result["boxes"] / result["boxes"].new_tensor([sx, sy, sx, sy])
            result["masks"] = paste_masks(probs, result["boxes"], meta.ori_shape)


def l1_box_loss(pred: Tensor, target: Tensor, num_sampled: int) -> Tensor:
    """MMDetection v2's ``L1Loss`` of these configs: summed over positives, averaged over samples."""
    return F.l1_loss(pred, target, reduction="sum") / max(num_sampled, 1)


def mask_loss(
    mask_logits: Tensor, proposals: list[Tensor], gt_masks: list[Tensor], gt_labels: list[Tensor],
    matched_idxs: list[Tensor],
) -> Tensor:
    """MMDetection's mask loss: BCE of the label's channel against binarised mask targets.

    Targets are ``mask_target``'s: the matched ground-truth mask cropped to each positive RoI by
    ``roi_align(aligned=True, sampling_ratio=0)`` at the logits' size, then ``>= 0.5``
    (https://github.com/open-mmlab/mmdetection/blob/v2.28.2/mmdet/core/mask/structures.py#L340-L370);
    torchvision's ``maskrcnn_loss`` uses unaligned RoIAlign and soft targets instead.
    """
    size = mask_logits.shape[-1]
    labels = torch.cat([l[i] for l, i in zip(gt_labels, matched_idxs)])
    targets = torch.cat([
        roi_align(m[:, None].to(p.dtype), torch.cat([i[:, None].to(p), p], dim=1), (size, size), 1.0, 0, True)[:, 0]
        for m, p, i in zip(gt_masks, proposals, matched_idxs)
    ]) >= 0.5
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    logits = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


def rpn_coder() -> DeltaXYWHCoder:
    """The RPN's coder: means 0, stds 1."""
    return DeltaXYWHCoder(stds=(1.0, 1.0, 1.0, 1.0))


def rcnn_coder() -> DeltaXYWHCoder:
    """The R-CNN head's coder: means 0, stds (0.1, 0.1, 0.2, 0.2)."""
    return DeltaXYWHCoder(stds=(0.1, 0.1, 0.2, 0.2))

