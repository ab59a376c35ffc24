"""Drawings of detections that read at every image size.

Sizes follow the image: the label font is 2.5% of the short side (never below
:data:`MIN_FONT_SIZE` pixels, so labels on small images stay legible), box lines 0.3% of the
diagonal (at least 1 pixel). Masks are semi-transparent (torchvision's
``draw_segmentation_masks``), boxes are torchvision's ``draw_bounding_boxes`` outlines, and each
label is class name and score in black or white (whichever contrasts) on a filled rectangle of
the box's colour, above the box or, where there is no room, inside its top edge; always inside
the image. The labels are a small Pillow step rather than ``draw_bounding_boxes``' own: its
labels take a font *file* (many machines have none) and sit at the box corner even when that runs
off the image. The font is Pillow's built-in scalable one (Pillow >= 10.1 with FreeType), so
drawings look the same on every machine; without it, DejaVu Sans if installed, else Pillow's
small bitmap font with a warning.
"""

from __future__ import annotations

import colorsys
import functools
import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from PIL import ImageDraw, ImageFont
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..modeling.transforms import binary_masks
from ..settings import DEFAULT_SETTINGS

__all__ = ["DRAW_THRESHOLD", "MIN_FONT_SIZE", "DrawingStyle", "drawing_style", "class_colors", "draw_detections"]

DRAW_THRESHOLD = 0.3  # MMDetection's demo draws detections scoring above 0.3
MIN_FONT_SIZE = 10  # pixels: smaller text is not legible whatever the image size
FONT_FRACTION = 0.025  # of the short side
LINE_FRACTION = 0.003  # of the diagonal
MASK_ALPHA = 0.45


@dataclass(frozen=True)
class DrawingStyle:
    """Sizes in pixels for one image size (see :func:`drawing_style`).

    Attributes:
        font_size: Label font size (the em height).
        line_width: Box outline width.
        padding: Space between a label's text and the edge of its filled rectangle.
    """

    font_size: int
    line_width: int
    padding: int


def drawing_style(*, height: int, width: int) -> DrawingStyle:
    """Font size, line width and label padding for an image of ``height`` x ``width`` pixels."""
    font_size = max(MIN_FONT_SIZE, round(FONT_FRACTION * min(height, width)))
    line_width = max(1, round(LINE_FRACTION * math.hypot(height, width)))
    return DrawingStyle(font_size=font_size, line_width=line_width, padding=max(1, font_size // 6))


def class_colors(labels: Tensor) -> list[tuple[int, int, int]]:
    """A fixed, well-spread RGB colour per class label (golden-ratio hues), the same in every image."""
    return [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 0.95))
        for label in labels.tolist()
    ]


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: scalable
    except (TypeError, ImportError, OSError):
        pass
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)  # Pillow searches the system's font folders
    except OSError:
        warnings.warn(
            "no scalable font: labels use Pillow's small bitmap font; install Pillow >= 10.1 with FreeType "
            "for labels sized to the image",
            RuntimeWarning,
            stacklevel=3,
        )
        return ImageFont.load_default()


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    luma = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def _label_rect(
    box: Sequence[float], size: tuple[int, int], *, text_size: tuple[int, int], style: DrawingStyle
) -> tuple[int, int, int, int]:
    """Where a label's filled rectangle goes (left, top, right, bottom; right and bottom excluded):
    above the box, else inside its top; within the image."""
    height, width = size
    rect_w, rect_h = text_size[0] + 2 * style.padding, text_size[1] + 2 * style.padding
    # torchvision draws box lines inward from the box's edges: the label sits on the top line.
    left, top = int(box[0]), int(box[1]) - rect_h
    if top < 0:  # no room above: inside the box, under its top line
        top = int(box[1]) + style.line_width
    left = min(max(left, 0), max(width - rect_w, 0))
    top = min(max(top, 0), max(height - rect_h, 0))
    return left, top, left + rect_w, top + rect_h


def _draw_labels(
    image: Tensor,
    boxes: Tensor,
    captions: Sequence[str],
    colors: Sequence[tuple[int, int, int]],
    style: DrawingStyle,
) -> Tensor:
    canvas = to_pil_image(image)
    draw = ImageDraw.Draw(canvas)
    font = _font(style.font_size)
    size = (image.shape[1], image.shape[2])
    for box, caption, color in zip(boxes.tolist(), captions, colors):
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font, anchor="lt")
        rect = _label_rect(box, size, text_size=(right - left, bottom - top), style=style)
        draw.rectangle((rect[0], rect[1], rect[2] - 1, rect[3] - 1), fill=color)  # Pillow includes the corner
        draw.text(
            (rect[0] + style.padding, rect[1] + style.padding), caption, fill=_text_color(color), font=font, anchor="lt"
        )
    return pil_to_tensor(canvas)


def draw_detections(
    image: Tensor,
    detections: dict[str, Tensor],
    *,
    classes: Sequence[str],
    threshold: Optional[float] = None,
    boxes: bool = True,
    masks: bool = True,
    scores: bool = True,
    style: Optional[DrawingStyle] = None,
) -> Tensor:
    """``image`` with the detections' masks, boxes and labels drawn.

    Args:
        image: A (3, H, W) uint8 RGB image (the one the detections were made on).
        detections: torchvision-style ``boxes``, ``labels``, ``scores`` and optionally ``masks``
            ((N, H, W) bool or (N, 1, H, W) probabilities, drawn where ``>= 0.5``).
        classes: Class names of labels 1..N (a label outside them is drawn as its number).
        threshold: Draw only detections scoring above this (None: all given).
        boxes: Draw box outlines and labels.
        masks: Draw masks (semi-transparent).
        scores: Put the score after the class name in labels.
        style: Sizes (default: :func:`drawing_style` for the image's size).

    Returns:
        A new (3, H, W) uint8 tensor; ``image`` is not changed.
    """
    if not isinstance(image, Tensor) or image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"draw_detections needs a (3, H, W) uint8 image tensor, got {_describe(image)}")
    image = image.cpu()
    all_scores = detections["scores"].cpu()
    keep = torch.ones(len(all_scores), dtype=torch.bool) if threshold is None else all_scores > threshold
    # Lowest scores first, so the surest detections' labels are drawn on top.
    keep = keep.nonzero().flatten()
    keep = keep[all_scores[keep].argsort(stable=True)]
    if len(keep) == 0:
        return image.clone()
    labels = detections["labels"].cpu()[keep]
    colors = class_colors(labels)
    drawn = image
    if masks and "masks" in detections:
        binary = binary_masks(detections["masks"].cpu()[keep], DEFAULT_SETTINGS.mask_thresh)
        drawn = draw_segmentation_masks(drawn, binary, alpha=MASK_ALPHA, colors=colors)
    if boxes:
        style = style or drawing_style(height=image.shape[1], width=image.shape[2])
        kept_boxes = detections["boxes"].cpu()[keep]
        drawn = draw_bounding_boxes(drawn, kept_boxes, colors=colors, width=style.line_width)
        names = [classes[i - 1] if 0 < i <= len(classes) else str(i) for i in labels.tolist()]
        if scores:
            names = [f"{name} {score:.2f}" for name, score in zip(names, all_scores[keep].tolist())]
        drawn = _draw_labels(drawn, kept_boxes, names, colors, style)
    return drawn if drawn is not image else image.clone()


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
