"""MMDetection's anchor generator for the RPN of the GN+WS detectors."""

from __future__ import annotations

import math
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

    def valid_flags(
        self, feature_sizes: Sequence[tuple[int, int]], pad_shape: tuple[int, int], device: torch.device
    ) -> Tensor:
        """Which anchors of a batch canvas belong to an image whose padded extent is ``pad_shape``.

        Reproduces ``AnchorGenerator.valid_flags``
        (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/task_modules/prior_generators/anchor_generator.py#L415-L476):
        at a level of stride ``s`` and size (H, W), location (y, x) is valid iff
        ``y < min(ceil(pad_h / s), H)`` and ``x < min(ceil(pad_w / s), W)``, and all anchors of
        a valid location are valid. With ``allowed_border=-1`` nothing else is excluded (no
        image-border test). Order as :meth:`grid_anchors`, levels concatenated.

        Args:
            feature_sizes: (H, W) of every level's feature map (the batch canvas).
            pad_shape: The image's resized size rounded up to the batch's size divisor
                (MMDetection's ``pad_shape``), not the batch canvas.
            device: Where to put the flags.
        """
        if len(feature_sizes) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} feature sizes, got {len(feature_sizes)}")
        flags = []
        for (height, width), stride, count in zip(feature_sizes, self.strides, self.num_anchors_per_location()):
            valid_h = min(int(math.ceil(pad_shape[0] / stride)), height)
            valid_w = min(int(math.ceil(pad_shape[1] / stride)), width)
            valid = torch.zeros((height, width), dtype=torch.bool, device=device)
            valid[:valid_h, :valid_w] = True
            flags.append(valid.reshape(-1, 1).expand(-1, count).reshape(-1))
        return torch.cat(flags)

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        if len(feature_maps) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} feature maps, got {len(feature_maps)}")
        # Anchors stay float32 when the features are low precision (autocast): a bf16 anchor
        # grid is off by whole pixels at the image's far side.
        dtype, device = torch.promote_types(feature_maps[0].dtype, torch.float32), feature_maps[0].device
        levels = [self.grid_anchors(tuple(f.shape[-2:]), s, dtype, device) for f, s in zip(feature_maps, self.strides)]
        anchors = torch.cat(levels)
        return [anchors for _ in range(image_list.tensors.shape[0])]
