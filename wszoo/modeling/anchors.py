"""MMDetection's anchor generator for the RPN of the GN+WS detectors."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

__all__ = ["MMDetAnchorGenerator"]


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
        # Anchors stay float32 when the features are low precision (autocast): a bf16 anchor
        # grid is off by whole pixels at the image's far side.
        dtype, device = torch.promote_types(feature_maps[0].dtype, torch.float32), feature_maps[0].device
        levels = [self.grid_anchors(tuple(f.shape[-2:]), s, dtype, device) for f, s in zip(feature_maps, self.strides)]
        anchors = torch.cat(levels)
        return [anchors for _ in range(image_list.tensors.shape[0])]
