"""The test-time and pre-processing settings of the GN+WS configs, in one frozen object.

The builders' defaults, :class:`~wszoo.modeling.transforms.DetectionTransform`, the Hub's
``config.json``, ``wszoo predict``/``eval`` and the CLI defaults all read :data:`DEFAULT_SETTINGS`,
so a default changes in one place. Values are MMDetection's ``test_cfg`` and data pipeline of
``configs/gn+ws`` (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/configs/_base_/models/mask-rcnn_r50_fpn.py#L100-L127,
https://github.com/open-mmlab/mmdetection/blob/v3.3.0/configs/_base_/datasets/coco_detection.py#L21-L30).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["InferenceSettings", "DEFAULT_SETTINGS"]


@dataclass(frozen=True)
class InferenceSettings:
    """How images are prepared and detections selected at test time.

    Attributes:
        image_scale: Keep-ratio resize target (long side, short side).
        image_mean: Per-channel mean of RGB on a 0..255 scale (``DetDataPreprocessor``).
        image_std: Per-channel std of RGB on a 0..255 scale.
        pad_size_divisor: The batch is padded bottom/right to a multiple of this.
        rpn_pre_nms_top_n: Proposals kept per level before the RPN's NMS (``nms_pre``).
        rpn_post_nms_top_n: Proposals kept after the RPN's NMS (``max_per_img``).
        rpn_nms_thresh: The RPN's NMS IoU threshold.
        score_thresh: R-CNN score threshold (strict ``>``, ``score_thr``).
        nms_thresh: R-CNN class-wise NMS IoU threshold.
        detections_per_img: Detections kept per image (``max_per_img``).
        mask_thresh: A mask pixel is foreground when its probability is ``>=`` this.
    """

    image_scale: tuple[int, int] = (1333, 800)
    image_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    image_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    pad_size_divisor: int = 32
    rpn_pre_nms_top_n: int = 1000
    rpn_post_nms_top_n: int = 1000
    rpn_nms_thresh: float = 0.7
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    mask_thresh: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


DEFAULT_SETTINGS = InferenceSettings()
