"""What ``Weights.transforms()`` returns: an image in any common form to what the model takes.

A detector resizes, normalises and pads by itself (:class:`~wszoo.modeling.transforms.DetectionTransform`),
so its preset only converts: a PIL image, an (H, W, 3) uint8 RGB array or a (3, H, W) tensor
becomes the (3, H, W) tensor that :class:`~wszoo.modeling.detector.WSRCNN` takes. uint8 stays
uint8 (0..255), the input that reproduces MMDetection exactly; float tensors are passed as they
are (RGB in [0, 1]). A backbone takes normalised float input, so its preset also normalises.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..settings import DEFAULT_SETTINGS

__all__ = ["DetectionPreset", "BackbonePreset", "to_image_tensor"]


def to_image_tensor(image: Any) -> Tensor:
    """A (3, H, W) RGB tensor of a PIL image, an (H, W, 3) / (H, W) uint8 array, or a tensor.

    Grayscale becomes three equal channels; PIL images in other modes (RGBA, P, I;16) are
    converted to RGB. A tensor of shape (3, H, W) or (1, H, W) keeps its dtype.

    Raises:
        TypeError: For another type or an array that is not uint8.
        ValueError: For a shape that is not an image.
    """
    if isinstance(image, Image.Image):
        image = np.array(image.convert("RGB"))  # a writable copy
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"expected a uint8 array (0..255), got {image.dtype}; convert it with .astype(np.uint8)")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3):
            raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grayscale array, got shape {image.shape}")
        if not image.flags.writeable:  # torch.from_numpy shares memory and would warn
            image = image.copy()
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if not isinstance(image, Tensor):
        raise TypeError(f"expected a PIL image, a numpy array or a tensor, got {type(image).__name__}")
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a (3, H, W) or (1, H, W) tensor, got shape {tuple(image.shape)}")
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


class DetectionPreset(nn.Module):
    """The preset of the detectors: any image to the (3, H, W) tensor ``WSRCNN`` takes.

    Resizing to ``image_scale``, normalising and padding happen inside the model, so they are
    not repeated here (doing them twice would change the detections).
    """

    def forward(self, image: Any) -> Tensor:
        return to_image_tensor(image)

    def describe(self) -> str:
        """What the preset does, and what the model does after it."""
        return (
            "Accepts PIL images, (H, W, 3) uint8 numpy arrays and (3, H, W) tensors (uint8 0..255 or "
            "float 0..1, RGB) and returns the (3, H, W) tensor, uint8 kept as uint8. The model then resizes "
            f"keeping the aspect ratio to fit {DEFAULT_SETTINGS.image_scale[0]}x{DEFAULT_SETTINGS.image_scale[1]}, "
            f"normalises with mean={list(DEFAULT_SETTINGS.image_mean)} and std={list(DEFAULT_SETTINGS.image_std)} "
            f"(0..255 scale) and pads to a multiple of {DEFAULT_SETTINGS.pad_size_divisor}."
        )


class BackbonePreset(nn.Module):
    """The preset of the ImageNet backbones: any image to a normalised float (3, H, W) tensor.

    No resize or crop: the backbones serve as detector backbones at any size.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(DEFAULT_SETTINGS.image_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(DEFAULT_SETTINGS.image_std).view(3, 1, 1), persistent=False)

    def forward(self, image: Any) -> Tensor:
        image = to_image_tensor(image)
        scaled = image.float() if image.dtype == torch.uint8 else image.float() * 255.0
        return (scaled - self.mean) / self.std

    def describe(self) -> str:
        """What the preset does."""
        return (
            "Accepts PIL images, (H, W, 3) uint8 numpy arrays and (3, H, W) tensors (uint8 0..255 or float "
            "0..1, RGB) and returns float32 (image - mean) / std on a 0..255 scale, "
            f"mean={list(DEFAULT_SETTINGS.image_mean)}, std={list(DEFAULT_SETTINGS.image_std)}; no resize or crop."
        )
