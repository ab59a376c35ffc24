"""wszoo: MMDetection's GN+WS (Weight Standardization) detectors as native torchvision models.

    >>> import wszoo
    >>> wszoo.list_models("mask_rcnn_*")[:1]
    ['mask_rcnn_r50_fpn_gn_ws_all_2x_coco']
    >>> model = wszoo.get_model("mask_rcnn_r50_fpn_gn_ws_all_2x_coco", weights="DEFAULT")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from . import builders
from .builders import *  # noqa: F401,F403 - one builder per zoo entry
from .coco import COCO_CATEGORY_IDS, COCO_CLASSES
from .registry import UnknownModelError, get_entry, list_models
from .zoo import ENTRIES, ZooEntry

__version__ = "0.1.0"

__all__ = [
    "COCO_CATEGORY_IDS",
    "COCO_CLASSES",
    "ENTRIES",
    "UnknownModelError",
    "ZooEntry",
    "get_entry",
    "get_model",
    "get_model_info",
    "list_models",
    "__version__",
    *builders.__all__,
]


def get_model(name: str, **kwargs: Any):
    """Builds a zoo model by name or alias; ``weights="DEFAULT"`` loads the published weights.

    Args:
        name: A name of ``list_models()``, or an MMDetection v2/v3 config name.
        **kwargs: The builder's keyword arguments (``weights``, ``pretrained``, ``num_classes``,
            ``progress``, ...); see :func:`wszoo.builders._build`.
    """
    entry = get_entry(name)
    return getattr(builders, entry.name)(**kwargs)


def get_model_info(name: str) -> ZooEntry:
    """The zoo entry (published metrics, URLs, hash, classes) of a model name or alias."""
    return get_entry(name)
