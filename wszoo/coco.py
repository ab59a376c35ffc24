"""The 80 COCO classes in MMDetection's order, and their COCO category ids.

wszoo's labels follow torchvision: 0 is background and label ``i`` (1..80) is
``COCO_CLASSES[i - 1]``, whose category id in COCO's annotation files is
``COCO_CATEGORY_IDS[i - 1]`` (COCO's ids skip 12, 26, 29, 30, 45, 66, 68, 69, 71 and 83).
"""

from __future__ import annotations

__all__ = ["COCO_CLASSES", "COCO_CATEGORY_IDS", "label_to_category_id", "category_id_to_label"]

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

_MISSING_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
COCO_CATEGORY_IDS: tuple[int, ...] = tuple(i for i in range(1, 91) if i not in _MISSING_IDS)


def label_to_category_id(label: int) -> int:
    """COCO category id of a wszoo label (1..80)."""
    if not 1 <= label <= len(COCO_CATEGORY_IDS):
        raise ValueError(f"label must be in 1..{len(COCO_CATEGORY_IDS)} (0 is background), got {label}")
    return COCO_CATEGORY_IDS[label - 1]


def category_id_to_label(category_id: int) -> int:
    """wszoo label (1..80) of a COCO category id."""
    try:
        return COCO_CATEGORY_IDS.index(category_id) + 1
    except ValueError:
        raise ValueError(f"{category_id} is not a COCO category id; valid ids: {list(COCO_CATEGORY_IDS)}") from None
