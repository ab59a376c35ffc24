"""Matching anchors and proposals to ground truths as MMDetection's ``MaxIoUAssigner`` does."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection import _utils as det_utils

__all__ = ["MaxIoUMatcher"]


class MaxIoUMatcher(det_utils.Matcher):
    """torchvision's ``Matcher`` with the low-quality step of MMDetection's ``MaxIoUAssigner``.

    Thresholds and the per-candidate argmax (ties to the first ground truth) are torchvision's,
    which computes them as ``MaxIoUAssigner.assign_wrt_overlaps`` does. The low-quality step
    (``match_low_quality=True``, ``gt_max_assign_all=True``) differs in two ways:

    * a ground truth makes low-quality matches only if its best IoU is at least
      ``min_pos_iou`` (0.3 in the RPN, 0.5 in the R-CNN of these configs); torchvision makes
      them whatever the IoU;
    * every candidate tied at a ground truth's best IoU is assigned to *that* ground truth, and
      MMDetection walks the ground truths in order, so when one candidate is the best match of
      two objects the later object wins; torchvision keeps the candidate's own best ground truth
      (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/task_modules/assigners/max_iou_assigner.py#L297-L313).

    Args:
        high_threshold: ``pos_iou_thr``.
        low_threshold: ``neg_iou_thr``.
        min_pos_iou: Smallest best IoU for which a ground truth makes low-quality matches.
        match_low_quality: Whether the low-quality step runs (``match_low_quality`` of the
            config: True in the RPN of both configs and in Mask R-CNN's R-CNN, False in Faster
            R-CNN's R-CNN).
    """

    def __init__(
        self, high_threshold: float, low_threshold: float, *, min_pos_iou: float, match_low_quality: bool = True
    ) -> None:
        super().__init__(high_threshold, low_threshold, allow_low_quality_matches=match_low_quality)
        self.min_pos_iou = min_pos_iou

    def set_low_quality_matches_(self, matches: Tensor, all_matches: Tensor, match_quality_matrix: Tensor) -> None:
        best, _ = match_quality_matrix.max(dim=1)
        eligible = (match_quality_matrix == best[:, None]) & (best >= self.min_pos_iou)[:, None]
        # The loop `for i in range(num_gts): assigned[ties of i] = i + 1` leaves each candidate
        # with the last eligible ground truth: the largest i + 1 among them (0 if none).
        order = torch.arange(1, match_quality_matrix.shape[0] + 1, device=matches.device)[:, None]
        last = (eligible * order).amax(dim=0)
        hit = last > 0
        matches[hit] = last[hit] - 1
