"""The region proposal network: torchvision's, with MMDetection's proposal selection and losses."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork

from .box_ops import DeltaXYWHCoder, batched_nms, clip_boxes
from .losses import average

__all__ = ["MMDetRPN", "VALID_ANCHORS", "rpn_coder"]


# Key under which :meth:`MMDetRPN.forward` hands each image's anchor validity to
# :meth:`MMDetRPN.assign_targets_to_anchors` (torchvision passes it only anchors and targets).
VALID_ANCHORS = "rpn_valid_anchors"


class MMDetRPN(RegionProposalNetwork):
    """torchvision's RPN with MMDetection's proposal selection and training targets.

    Proposals reproduce ``RPNHead._predict_by_feat_single`` and ``_bbox_post_process``
    (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/dense_heads/rpn_head.py#L158-L300):
    per level, sigmoid scores and, above ``pre_nms_top_n``, keep the best after a descending
    ``sort``; clip to the image; drop boxes whose width or height is not > 0; NMS per level on
    level-offset boxes; keep the best ``post_nms_top_n``.

    Training targets reproduce ``AnchorHead.get_anchors`` and ``_get_targets_single`` with
    ``allowed_border=-1``
    (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/dense_heads/anchor_head.py#L186-L199,
    https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/dense_heads/anchor_head.py#L240-L306):
    only the anchors inside an image's own padded extent (``pad_shape``, see
    :meth:`~wszoo.modeling.anchors.MMDetAnchorGenerator.valid_flags`) are assigned and
    sampled; anchors in the padding that another, larger image of the batch adds are ignored
    (label -1), so they are never sampled and not counted in the loss's denominator. Sampling
    stays random (``fg_bg_sampler.batch_size_per_image`` anchors per image, half positive at
    most).
    """

    def forward(
        self, images: ImageList, features: dict[str, Tensor], targets: Optional[list[dict[str, Tensor]]] = None
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        if self.training and targets is not None:
            pad_shapes = getattr(images, "pad_shapes", None)
            if pad_shapes is None:
                raise TypeError(
                    "MMDetRPN needs each image's padded extent in training: pass the PaddedImageList "
                    "that wszoo's DetectionTransform returns, not a plain ImageList"
                )
            sizes = [tuple(f.shape[-2:]) for f in features.values()]
            device = images.tensors.device
            targets = [
                {**t, VALID_ANCHORS: self.anchor_generator.valid_flags(sizes, pad, device)}
                for t, pad in zip(targets, pad_shapes)
            ]
        return super().forward(images, features, targets)

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """torchvision's assignment run on each image's valid anchors only, then ``unmap``-ped.

        Invalid anchors get label -1 (ignored) and a zero box, as ``unmap`` gives them
        label_weight 0 and bbox_weight 0 (anchor_head.py L240-L306); they take no part in
        the assignment either, so a ground truth's low-quality matches come from valid anchors.
        """
        labels, matched_gt_boxes = [], []
        for anchors_per_image, target in zip(anchors, targets):
            valid = target[VALID_ANCHORS]
            (valid_labels,), (valid_boxes,) = super().assign_targets_to_anchors([anchors_per_image[valid]], [target])
            image_labels = valid_labels.new_full((anchors_per_image.shape[0],), -1.0)
            image_labels[valid] = valid_labels
            image_boxes = valid_boxes.new_zeros(anchors_per_image.shape)
            image_boxes[valid] = valid_boxes
            labels.append(image_labels)
            matched_gt_boxes.append(image_boxes)
        return labels, matched_gt_boxes

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        num_images = proposals.shape[0]
        # Under autocast the head's outputs are low precision; proposal selection is float32.
        proposals, objectness = proposals.float(), objectness.detach().float().reshape(num_images, -1)
        final_boxes, final_scores = [], []
        for boxes, scores, image_shape in zip(proposals, objectness, image_shapes):
            boxes, scores, levels = self._top_per_level(boxes, scores, num_anchors_per_level)
            clip_boxes(boxes, image_shape)
            wh = boxes[:, 2:] - boxes[:, :2]
            valid = (wh[:, 0] > 0) & (wh[:, 1] > 0)
            if torch.compiler.is_exporting() or not bool(valid.all()):
                boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
            keep = batched_nms(boxes, scores, levels, self.nms_thresh)[: self.post_nms_top_n()]
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        return final_boxes, final_scores

    def compute_loss(
        self, objectness: Tensor, pred_bbox_deltas: Tensor, labels: list[Tensor], regression_targets: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Sigmoid cross-entropy and L1 box loss over the sampled anchors (training only).

        Both are sums divided by MMDetection's ``avg_factor``: over the images,
        ``max(#positives, 1) + max(#negatives, 1)`` sampled
        (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/task_modules/samplers/sampling_result.py#L94-L100,
        summed in https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/dense_heads/anchor_head.py#L389-L394;
        the box loss is ``L1Loss`` with the same ``avg_factor``, anchor_head.py L441-L465).
        """
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        avg_factor = sum(max(int(p.sum()), 1) + max(int(n.sum()), 1) for p, n in zip(sampled_pos, sampled_neg))
        pos = torch.where(torch.cat(sampled_pos, dim=0))[0]
        sampled = torch.cat([pos, torch.where(torch.cat(sampled_neg, dim=0))[0]])
        labels_, targets = torch.cat(labels, dim=0), torch.cat(regression_targets, dim=0)
        box_loss = average(F.l1_loss(pred_bbox_deltas[pos], targets[pos], reduction="sum"), avg_factor)
        objectness_loss = average(
            F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels_[sampled], reduction="sum"),
            avg_factor,
        )
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


def rpn_coder() -> DeltaXYWHCoder:
    """The RPN's coder: means 0, stds 1."""
    return DeltaXYWHCoder(stds=(1.0, 1.0, 1.0, 1.0))
