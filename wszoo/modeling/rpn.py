"""The region proposal network: torchvision's, with MMDetection's proposal selection and losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.rpn import RegionProposalNetwork

from .box_ops import DeltaXYWHCoder, batched_nms, clip_boxes
from .losses import l1_box_loss

__all__ = ["MMDetRPN", "rpn_coder"]


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


def rpn_coder() -> DeltaXYWHCoder:
    """The RPN's coder: means 0, stds 1."""
    return DeltaXYWHCoder(stds=(1.0, 1.0, 1.0, 1.0))
