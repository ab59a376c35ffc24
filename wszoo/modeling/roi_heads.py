"""RoI pooling and the R-CNN heads of the GN+WS detectors, as seams in torchvision's ``RoIHeads``.

torchvision's ``RoIHeads`` is kept for training (matcher, sampler, box coder). What differs
from MMDetection is replaced:

* RoI pooling: ``aligned=True``, adaptive sampling, MMDetection's level mapping
  (:class:`MMDetRoIAlign`);
* R-CNN post-processing, mask pasting and the mapping back to the input image
  (:meth:`MMDetRoIHeads.predict`);
* in training, where the ground truths join the candidates
  (:meth:`MMDetRoIHeads.select_training_samples`) and the box and mask losses
  (:mod:`wszoo.modeling.losses`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads

from ..settings import DEFAULT_SETTINGS
from .box_ops import DeltaXYWHCoder, batched_nms
from .layers import ConvLayer, ConvNormAct, NormLayer, WSConv2d, group_norm
from .losses import average, mask_loss
from .roi_align import multilevel_roi_align
from .transforms import ImageMeta, paste_masks, scale_vector

__all__ = ["MMDetRoIAlign", "ConvFCBoxHead", "ConvMaskHead", "MMDetRoIHeads", "rcnn_coder"]


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

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: Optional[list] = None) -> Tensor:
        maps = list(features.values())[: len(self.strides)]
        rois = torch.cat([torch.cat([b.new_full((b.shape[0], 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
        out = maps[0].new_zeros((rois.shape[0], maps[0].shape[1], self.output_size, self.output_size))
        levels = self.map_levels(rois)
        # On the CPU at inference the RoIs are pooled on several threads (bit-identical).
        multilevel_roi_align(maps, rois, levels, output_size=self.output_size, strides=self.strides, out=out)
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
    """torchvision's ``RoIHeads`` with MMDetection's training samples, losses and test-time path.

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

    # How predict() returns masks: "probs" (N, 1, H, W) float32, torchvision's, or "bool"
    # (N, H, W), MMDetection's binary masks (probability >= mask_thresh). Set by build_detector.
    mask_format: str = "probs"
    mask_thresh: float = DEFAULT_SETTINGS.mask_thresh

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: Optional[list[dict[str, Tensor]]] = None,
    ) -> tuple[list, dict[str, Tensor]]:
        """Training losses, as ``BBoxHead.loss`` and ``FCNMaskHead.loss_and_target`` compute them.

        Cross-entropy and the L1 loss on the label's deltas are sums over all sampled RoIs of
        the batch divided by their number
        (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/roi_heads/bbox_heads/bbox_head.py#L375-L419).
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
        num_sampled = labels_.numel()
        losses = {
            "loss_classifier": average(F.cross_entropy(class_logits, labels_, reduction="sum"), max(num_sampled, 1)),
            "loss_box_reg": average(
                F.l1_loss(box_regression[pos, labels_[pos]], targets_[pos], reduction="sum"), num_sampled
            ),
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

    def select_training_samples(
        self, proposals: list[Tensor], targets: Optional[list[dict[str, Tensor]]]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Assigns the proposals, puts the ground truths in front, samples; as MMDetection.

        ``StandardRoIHead.loss`` assigns the RPN proposals only; the sampler then prepends every
        ground-truth box, assigned to itself with its own label (``add_gt_``), and draws
        positives and negatives from the lot
        (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/roi_heads/standard_roi_head.py#L117-L130,
        https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/task_modules/samplers/base_sampler.py#L99-L108,
        https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/task_modules/assigners/assign_result.py#L185-L198).
        torchvision appends the ground truths and matches them by overlap, which gives two
        identical boxes of different classes one label. Sampling is torchvision's random
        ``fg_bg_sampler`` (``batch_size_per_image`` RoIs, at most ``positive_fraction`` of them
        positive), as ``RandomSampler`` draws.

        Returns:
            Per image: the sampled RoIs, the index of each one's ground truth (0 for
            negatives), its label (0 = background) and its regression target.
        """
        self.check_targets(targets)
        if targets is None:
            raise ValueError("targets should not be None")
        dtype = proposals[0].dtype
        gt_boxes = [t["boxes"].to(dtype) for t in targets]
        gt_labels = [t["labels"].to(torch.int64) for t in targets]
        boxes, matched_idxs, labels, matched_gt_boxes = [], [], [], []
        for image_proposals, image_gt_boxes, image_gt_labels in zip(proposals, gt_boxes, gt_labels):
            if image_proposals.shape[0] > 0:
                (image_matched,), (image_labels,) = self.assign_targets_to_proposals(
                    [image_proposals], [image_gt_boxes], [image_gt_labels]
                )
            else:
                image_matched = image_gt_labels.new_zeros((0,))
                image_labels = image_gt_labels.new_zeros((0,))
            self_idxs = torch.arange(image_gt_boxes.shape[0], device=image_matched.device)
            boxes.append(torch.cat([image_gt_boxes, image_proposals]))
            matched_idxs.append(torch.cat([self_idxs, image_matched]))
            labels.append(torch.cat([image_gt_labels, image_labels]))
        sampled_inds = self.subsample(labels)
        for index, image_sampled in enumerate(sampled_inds):
            boxes[index] = boxes[index][image_sampled]
            labels[index] = labels[index][image_sampled]
            matched_idxs[index] = matched_idxs[index][image_sampled]
            image_gt_boxes = gt_boxes[index]
            if image_gt_boxes.numel() == 0:
                image_gt_boxes = image_gt_boxes.new_zeros((1, 4))
            matched_gt_boxes.append(image_gt_boxes[matched_idxs[index]])
        regression_targets = self.box_coder.encode(matched_gt_boxes, boxes)
        return boxes, matched_idxs, labels, regression_targets

    def predict(
        self, features: dict[str, Tensor], proposals: list[Tensor], metas: list[ImageMeta]
    ) -> list[dict[str, Tensor]]:
        """Detections in input-image pixels: boxes, labels (1..C-1), scores[, masks].

        Under ``torch.autocast`` the heads may run in low precision; decoding, NMS, pasting and
        every returned tensor are float32 (or bool / int64).
        """
        # RoIAlign reads NCHW maps and torchvision's kernels copy a channels_last one on every
        # call: the box and mask pooling share one copy (a no-op for NCHW maps).
        features = {name: feature.contiguous() for name, feature in features.items()}
        box_features = self.box_head(self.box_roi_pool(features, proposals, None))
        class_logits, box_regression = self.box_predictor(box_features)
        counts = [p.shape[0] for p in proposals]
        with torch.autocast(class_logits.device.type, enabled=False):
            results = [
                self._detect(logits.float(), deltas.float(), rois.float(), meta)
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
            boxes = boxes * scale_vector(meta, boxes, reciprocal=True)
        labels = torch.arange(num_classes, device=scores.device).view(1, -1).expand_as(scores).reshape(-1)
        scores = scores.reshape(-1)
        keep = (scores > self.score_thresh).nonzero(as_tuple=False).squeeze(1)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": boxes[keep], "labels": labels[keep] + 1, "scores": scores[keep]}

    def _predict_masks(self, features: dict[str, Tensor], results: list[dict[str, Tensor]], metas) -> None:
        mask_features = self.mask_head(self.mask_roi_pool(features, [r["boxes"] for r in results], None))
        mask_logits = self.mask_predictor(mask_features).float()
        counts = [r["boxes"].shape[0] for r in results]
        # "bool" pastes MMDetection's binary masks directly (N, H, W), a quarter of the memory of
        # float probabilities and no image-sized float intermediate.
        threshold = self.mask_thresh if self.mask_format == "bool" else None
        with torch.autocast(mask_logits.device.type, enabled=False):
            for result, logits, meta in zip(results, mask_logits.split(counts), metas):
                probs = logits[torch.arange(logits.shape[0], device=logits.device), result["labels"]].sigmoid()
                result["boxes"] = result["boxes"] / scale_vector(meta, result["boxes"])
                result["masks"] = paste_masks(probs, result["boxes"], meta.ori_shape, threshold=threshold)


def rcnn_coder() -> DeltaXYWHCoder:
    """The R-CNN head's coder: means 0, stds (0.1, 0.1, 0.2, 0.2)."""
    return DeltaXYWHCoder(stds=(0.1, 0.1, 0.2, 0.2))
