"""The training losses of the GN+WS configs where they differ from torchvision's.

MMDetection's configs use ``L1Loss`` on the deltas in both heads where torchvision uses
smooth L1 with beta 1/9, average sums by an ``avg_factor`` (plus float32 eps) rather than a
mean, and build mask targets with aligned RoIAlign from binarised, batch-padded masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

__all__ = ["average", "mask_loss", "mask_targets"]

_EPS = torch.finfo(torch.float32).eps


def average(total: Tensor, avg_factor: float) -> Tensor:
    """A summed loss divided by ``avg_factor + eps``, as ``weight_reduce_loss`` divides it
    (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/losses/utils.py#L57-L61)."""
    return total / (avg_factor + _EPS)


def mask_targets(proposals: list[Tensor], gt_masks: list[Tensor], matched_idxs: list[Tensor], size: int) -> Tensor:
    """Binary (N, size, size) targets of the positive RoIs, as MMDetection's ``mask_target``.

    Each RoI crops its ground truth's mask with ``roi_align(aligned=True, sampling_ratio=0)``,
    then ``>= 0.5``
    (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/structures/mask/mask_target.py#L67-L127,
    https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/structures/mask/structures.py#L366-L400).
    ``gt_masks`` are expected padded to the batch canvas, as
    :class:`~wszoo.modeling.transforms.DetectionTransform` pads them in training: samples within
    half a pixel past an image's right or bottom edge then blend with zeros, as MMDetection's
    do, instead of repeating the edge pixel.

    Args:
        proposals: Per image, the positive RoIs (K, 4).
        gt_masks: Per image, the ground-truth masks (G, H, W).
        matched_idxs: Per image, each RoI's ground-truth index (K,).
        size: Output side (28).
    """
    crops = [
        roi_align(m[:, None].to(p.dtype), torch.cat([i[:, None].to(p), p], dim=1), (size, size), 1.0, 0, True)[:, 0]
        for m, p, i in zip(gt_masks, proposals, matched_idxs)
    ]
    return torch.cat(crops) >= 0.5


def mask_loss(
    mask_logits: Tensor,
    proposals: list[Tensor],
    gt_masks: list[Tensor],
    gt_labels: list[Tensor],
    matched_idxs: list[Tensor],
) -> Tensor:
    """MMDetection's mask loss: BCE of the label's channel against :func:`mask_targets`.

    The mean over all positives' pixels (``mask_cross_entropy``,
    https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/losses/cross_entropy_loss.py#L149-L198);
    torchvision's ``maskrcnn_loss`` uses unaligned RoIAlign and soft targets instead.
    """
    labels = torch.cat([lab[i] for lab, i in zip(gt_labels, matched_idxs)])
    targets = mask_targets(proposals, gt_masks, matched_idxs, mask_logits.shape[-1])
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    logits = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
