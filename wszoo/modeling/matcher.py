"""Matching anchors and proposals to ground truths as MMDetection's ``MaxIoUAssigner`` does."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection import _utils as det_utils

__all__ = ["MaxIoUMatcher"]


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
