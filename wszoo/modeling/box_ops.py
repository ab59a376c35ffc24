"""MMDetection's box arithmetic: the delta (x, y, w, h) coder and class-aware batched NMS.

torchvision's ``BoxCoder`` and ``batched_nms`` compute the same quantities with other float
operations (``x1 + 0.5 * w`` instead of ``(x1 + x2) * 0.5``, division by weights instead of
multiplication by stds, no lower clamp of ``dw``; NMS on unshifted boxes above 4000 boxes),
which moves boxes by float rounding and can flip borderline NMS decisions. These functions
reproduce MMDetection's operations one for one.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import nms

__all__ = ["DeltaXYWHCoder", "batched_nms", "clip_boxes"]


def clip_boxes(boxes: Tensor, image_shape: tuple[int, int]) -> Tensor:
    """Clamps x to [0, width] and y to [0, height] (MMDetection: no -1), in place."""
    height, width = image_shape
    boxes[..., 0::2].clamp_(min=0, max=width)
    boxes[..., 1::2].clamp_(min=0, max=height)
    return boxes


class DeltaXYWHCoder(det_utils.BoxCoder):
    """MMDetection's ``DeltaXYWHBBoxCoder`` behind torchvision's ``BoxCoder`` interface.

    Decoding reproduces ``delta2bbox``
    (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/task_modules/coders/delta_xywh_bbox_coder.py#L277-L330):
    ``deltas * stds + means``, centres ``(x1 + x2) * 0.5``, sizes without +1, ``dw``/``dh``
    clamped to +-|log(16 / 1000)| on both sides, ``dx``/``dy`` not clamped. Encoding reproduces
    ``bbox2delta``.

    Args:
        stds: Per-coordinate standard deviations; (1, 1, 1, 1) for the RPN and
            (0.1, 0.1, 0.2, 0.2) for the R-CNN head.
        means: Per-coordinate means (0 in these configs).
        wh_ratio_clip: ``dw`` and ``dh`` are clamped to ``abs(log(wh_ratio_clip))``.
    """

    def __init__(
        self,
        stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        wh_ratio_clip: float = 16 / 1000,
    ) -> None:
        super().__init__(weights=(1.0, 1.0, 1.0, 1.0))
        self.stds = tuple(float(s) for s in stds)
        self.means = tuple(float(m) for m in means)
        self.max_ratio = abs(math.log(wh_ratio_clip))

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Deltas that move ``proposals`` onto ``reference_boxes`` (the ground truth)."""
        p_ctr = (proposals[:, :2] + proposals[:, 2:]) * 0.5
        p_wh = proposals[:, 2:] - proposals[:, :2]
        g_ctr = (reference_boxes[:, :2] + reference_boxes[:, 2:]) * 0.5
        g_wh = reference_boxes[:, 2:] - reference_boxes[:, :2]
        deltas = torch.cat([(g_ctr - p_ctr) / p_wh, torch.log(g_wh / p_wh)], dim=1)
        means = deltas.new_tensor(self.means)
        stds = deltas.new_tensor(self.stds)
        return (deltas - means) / stds

    def decode_single(self, rel_codes: Tensor, boxes: Tensor, max_shape: Optional[tuple[int, int]] = None) -> Tensor:
        """Applies ``rel_codes`` (K, 4 * C) to ``boxes`` (K, 4); returns (K, 4 * C).

        Args:
            rel_codes: Deltas, class c at columns 4c..4c+3.
            boxes: Reference boxes (anchors or proposals) as x1, y1, x2, y2.
            max_shape: (height, width) to clip to, or None.
        """
        num_boxes = rel_codes.size(0)
        # Decoding is float32 even when the head ran in bf16/fp16 (autocast): exp() of a
        # low-precision delta moves a box edge by pixels. A no-op for float32 input.
        deltas = rel_codes.reshape(-1, 4).float()
        num_per_box = rel_codes.shape[-1] // 4
        boxes = boxes.float()
        boxes = boxes.repeat_interleave(num_per_box, dim=0) if num_per_box != 1 else boxes
        denorm = deltas * deltas.new_tensor(self.stds).view(1, -1) + deltas.new_tensor(self.means).view(1, -1)
        dxy = denorm[:, :2]
        dwh = denorm[:, 2:].clamp(min=-self.max_ratio, max=self.max_ratio)
        pxy = (boxes[:, :2] + boxes[:, 2:]) * 0.5
        pwh = boxes[:, 2:] - boxes[:, :2]
        gxy = pxy + pwh * dxy
        gwh = pwh * dwh.exp()
        decoded = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
        if max_shape is not None:
            clip_boxes(decoded, max_shape)
        return decoded.reshape(num_boxes, rel_codes.shape[-1])


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, split_thr: int = 10000) -> Tensor:
    """Class-aware NMS exactly as MMCV's ``batched_nms``; returns kept indices by score.

    Boxes of different ``idxs`` are offset by ``idx * (boxes.max() + 1)`` so one NMS never
    mixes them. Below ``split_thr`` boxes one NMS runs over all; above it, one NMS per idx runs
    on the *offset* boxes and the union is sorted by score
    (https://github.com/open-mmlab/mmcv/blob/v2.1.0/mmcv/ops/nms.py#L269-L318).
    torchvision's NMS performs the same float32 arithmetic as MMCV's CPU kernel.

    Args:
        boxes: (N, 4) boxes as x1, y1, x2, y2.
        scores: (N,) scores.
        idxs: (N,) integer group of each box (level or class).
        iou_threshold: Boxes overlapping a kept box by more than this are dropped.
        split_thr: Box count from which NMS runs group by group.
    """
    if torch.compiler.is_exporting():
        # Box counts are data-dependent in an exported graph: always one NMS over the offset
        # boxes. The offsets keep groups apart, so this keeps the same boxes as the split path;
        # only the order of exactly equal scores may differ.
        top = torch.cat([boxes.reshape(-1), boxes.new_full((1,), float("-inf"))]).max()
        shifted = boxes + (idxs.to(boxes) * (top + 1))[:, None]
        # torchvision's shape function of nms promises at least two kept boxes (the legacy
        # minimum of an unbacked size), so an exported graph would assert when fewer survive.
        # Two sentinel boxes, far from every other box and below every score, are always kept,
        # last; they are dropped again.
        far = torch.cat([shifted.reshape(-1), shifted.new_zeros(1)]).max() + 16
        sentinels = torch.stack([far, far, far + 1, far + 1]) + shifted.new_tensor([[0.0], [4.0]])
        keep = nms(torch.cat([shifted, sentinels]), torch.cat([scores, scores.new_tensor([-1.0, -2.0])]), iou_threshold)
        return keep[:-2]
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    shifted = boxes + offsets[:, None]
    if shifted.shape[0] < split_thr:
        return nms(shifted, scores, iou_threshold)
    kept = torch.zeros_like(scores, dtype=torch.bool)
    for group in torch.unique(idxs):
        members = (idxs == group).nonzero(as_tuple=False).view(-1)
        kept[members[nms(shifted[members], scores[members], iou_threshold)]] = True
    keep = kept.nonzero(as_tuple=False).view(-1)
    _, order = scores[keep].sort(descending=True)
    return keep[order]
