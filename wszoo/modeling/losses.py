"""The training losses of the GN+WS configs where they differ from torchvision's.

MMDetection v2's configs use ``L1Loss`` on the deltas in both heads where torchvision uses
smooth L1 with beta 1/9, and build mask targets with aligned RoIAlign.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

__all__ = ["l1_box_loss", "mask_loss"]


def l1_box_loss(pred: Tensor, target: Tensor, num_sampled: int) -> Tensor:
    """MMDetection v2's ``L1Loss`` of these configs: summed over positives, averaged over samples."""
    return F.l1_loss(pred, target, reduction="sum") / max(num_sampled, 1)


def mask_loss(
    mask_logits: Tensor,
    proposals: list[Tensor],
    gt_masks: list[Tensor],
    gt_labels: list[Tensor],
    matched_idxs: list[Tensor],
) -> Tensor:
    """MMDetection's mask loss: BCE of the label's channel against binarised mask targets.

    Targets are ``mask_target``'s: the matched ground-truth mask cropped to each positive RoI by
    ``roi_align(aligned=True, sampling_ratio=0)`` at the logits' size, then ``>= 0.5``
    (https://github.com/open-mmlab/mmdetection/blob/v2.28.2/mmdet/core/mask/structures.py#L340-L370);
    torchvision's ``maskrcnn_loss`` uses unaligned RoIAlign and soft targets instead.
    """
    size = mask_logits.shape[-1]
    labels = torch.cat([lab[i] for lab, i in zip(gt_labels, matched_idxs)])
    targets = (
        torch.cat(
            [
                roi_align(m[:, None].to(p.dtype), torch.cat([i[:, None].to(p), p], dim=1), (size, size), 1.0, 0, True)[
                    :, 0
                ]
                for m, p, i in zip(gt_masks, proposals, matched_idxs)
            ]
        )
        >= 0.5
    )
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    logits = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
