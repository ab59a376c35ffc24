"""Drawings sized to the image: labels measured in the pixels at 96x96, 640x480 and 3000x2000."""

from __future__ import annotations

import pytest
import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from wszoo.coco import COCO_CLASSES
from wszoo.inference.drawing import MASK_ALPHA, class_colors, draw_detections, drawing_style

SIZES = [(96, 96), (480, 640), (2000, 3000)]


def detection(height: int, width: int, box: tuple[float, float, float, float], score: float = 0.9) -> dict:
    x1, y1, x2, y2 = (round(f * s) for f, s in zip(box, (width, height, width, height)))
    masks = torch.zeros(1, height, width, dtype=torch.bool)
    masks[0, (y1 + y2) // 2 :, x1:x2] = True
    return {
        "boxes": torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32),
        "labels": torch.tensor([1]),
        "scores": torch.tensor([score]),
        "masks": masks,
    }


def label_pixels(image: torch.Tensor, found: dict, **options) -> torch.Tensor:
    """(H, W) bool: where the drawing differs from torchvision's boxes alone (the label)."""
    style = drawing_style(height=image.shape[1], width=image.shape[2])
    boxes_only = draw_bounding_boxes(
        image, found["boxes"], colors=class_colors(found["labels"]), width=style.line_width
    )
    drawn = draw_detections(image, found, classes=COCO_CLASSES, masks=False, **options)
    return (drawn != boxes_only).any(0)


def extent(where: torch.Tensor) -> tuple[int, int, int, int]:
    rows, cols = where.any(1).nonzero().flatten(), where.any(0).nonzero().flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


@pytest.mark.parametrize("height, width", SIZES)
def test_labels_are_at_least_1_5_percent_of_the_short_side_on_a_filled_background(height, width):
    image = torch.full((3, height, width), 128, dtype=torch.uint8)
    found = detection(height, width, (0.3, 0.5, 0.7, 0.9))
    style = drawing_style(height=height, width=width)
    assert style.font_size >= 0.015 * min(height, width) and style.line_width >= 1
    label = label_pixels(image, found)
    top, bottom, left, right = extent(label)
    assert bottom - top >= 0.015 * min(height, width) and bottom - top >= style.font_size * 0.7
    assert bottom <= int(found["boxes"][0, 1])  # above the box
    drawn = draw_detections(image, found, classes=COCO_CLASSES)
    rect = drawn[:, top:bottom, left:right].reshape(3, -1).t()
    color = torch.tensor(class_colors(found["labels"])[0], dtype=torch.uint8)
    filled = (rect == color).all(1).float().mean()
    luma = rect.float() @ torch.tensor([0.299, 0.587, 0.114])
    text = (luma < 40) | (luma > 215)  # black or white text
    assert filled > 0.5 and text.float().mean() > 0.05


@pytest.mark.parametrize("height, width", SIZES)
def test_line_width_grows_with_the_image(height, width):
    style = drawing_style(height=height, width=width)
    assert style.line_width == max(1, round(0.003 * (height**2 + width**2) ** 0.5))


def test_labels_stay_inside_the_image_and_whole_at_the_edges():
    height, width = 480, 640
    image = torch.full((3, height, width), 128, dtype=torch.uint8)
    style = drawing_style(height=height, width=width)
    middle = extent(label_pixels(image, detection(height, width, (0.4, 0.4, 0.6, 0.6))))
    for box in ((0.0, 0.0, 0.3, 0.3), (0.9, 0.0, 1.0, 0.2), (0.95, 0.96, 1.0, 1.0)):
        top, bottom, left, right = extent(label_pixels(image, detection(height, width, box)))
        # Whole: as in the middle, less the box line it may share a colour with when inside the box.
        assert 0 <= middle[1] - middle[0] - (bottom - top) <= style.line_width, box
        assert 0 <= middle[3] - middle[2] - (right - left) <= style.line_width, box


def test_hide_boxes_masks_or_scores_and_the_drawing_threshold():
    height, width = 120, 160
    image = torch.full((3, height, width), 128, dtype=torch.uint8)
    found = detection(height, width, (0.2, 0.4, 0.8, 0.9))
    colors = class_colors(found["labels"])
    masks_only = draw_segmentation_masks(image, found["masks"], alpha=MASK_ALPHA, colors=colors)
    assert torch.equal(draw_detections(image, found, classes=COCO_CLASSES, boxes=False), masks_only)
    no_masks = draw_detections(image, found, classes=COCO_CLASSES, masks=False)
    inside = (slice(None), int(found["boxes"][0, 3]) - 10, int(found["boxes"][0, 0]) + 10)
    assert torch.equal(no_masks[inside], image[inside])
    assert not torch.equal(draw_detections(image, found, classes=COCO_CLASSES)[inside], image[inside])
    with_scores, without = label_pixels(image, found), label_pixels(image, found, scores=False)
    assert extent(without)[3] - extent(without)[2] < extent(with_scores)[3] - extent(with_scores)[2]
    assert torch.equal(draw_detections(image, found, classes=COCO_CLASSES, threshold=0.95), image)
    assert torch.equal(draw_detections(image, found, classes=COCO_CLASSES, threshold=0.5), no_masks) is False


def test_the_surest_label_is_drawn_on_top():
    height, width = 100, 100
    image = torch.full((3, height, width), 128, dtype=torch.uint8)
    first, second = (
        detection(height, width, (0.2, 0.5, 0.8, 0.9), 0.9),
        detection(height, width, (0.2, 0.5, 0.8, 0.9), 0.4),
    )
    second["labels"] = torch.tensor([3])
    both = {key: torch.cat([second[key], first[key]]) for key in first}  # lower score first in the input
    top = extent(label_pixels(image, first))
    drawn = draw_detections(image, both, classes=COCO_CLASSES, masks=False)
    alone = draw_detections(image, first, classes=COCO_CLASSES, masks=False)
    assert torch.equal(drawn[:, top[0] : top[1], top[2] : top[3]], alone[:, top[0] : top[1], top[2] : top[3]])


def test_a_bad_image_is_refused():
    with pytest.raises(ValueError, match=r"needs a \(3, H, W\) uint8 image tensor, got a torch.float32 tensor"):
        draw_detections(torch.zeros(3, 4, 4), detection(4, 4, (0, 0, 1, 1)), classes=COCO_CLASSES)
