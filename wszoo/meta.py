"""The metadata of a zoo entry as data: torchvision's ``Weights.meta`` and timm's ``pretrained_cfg``.

Everything here is derived from the zoo table (:data:`wszoo.zoo.ENTRIES`); nothing is stored
twice. :func:`entry_meta` is what ``Weights.meta`` and ``model.meta`` hold, and what ``wszoo info``
may print. Its keys follow torchvision's schema where torchvision has one:

* ``categories``: label -> class name; index 0 is ``"__background__"`` (detectors only).
* ``num_params``: parameters of the model the builder returns (detectors: 81 classes; backbones:
  the feature extractor, to which a classifier in the published file would add its own).
* ``min_size``: smallest (height, width) accepted.
* ``_metrics``: ``{"COCO-val2017": {"box_map": ..., "mask_map": ...}}``, MMDetection's published
  AP; empty for the backbones (no accuracy published).
* ``_ops``: GFLOPs as torchvision counts them (multiply-adds x 1e-9) at one 800x1216 image for
  detectors and 224x224 for backbones; exactly what is counted is in ``tools/model_stats.py``.
* ``_file_size``: MB (2**20 bytes) of the weights as float32 -- ``num_params * 4`` bytes, the
  size of the converted safetensors file that wszoo caches (to within its small JSON header).
  The sizes of OpenMMLab's original ``.pth`` files are not recorded here (they were not
  downloadable when the table was made); they are a little larger (pickle framing, MMDetection's
  meta) and lack the background rows wszoo adds (4,100 parameters for Faster R-CNN's box head).
* ``recipe``: the MMDetection config the weights were trained with (backbones: their URL, no
  config was published); ``_docs``: one sentence; ``license``.

and adds wszoo's own: ``task``, ``sha256`` (of the source checkpoint: the full digest when pinned,
else the prefix in its file name), and where published ``log`` (training log URL),
``mmdet_v2_config``, ``mmdet_v3_config``, ``openmmlab_key``, ``train_mem_gb``, ``inf_fps`` (V100).
"""

from __future__ import annotations

from typing import Any, Optional

from .arch import DetectorArch
from .settings import DEFAULT_SETTINGS
from .zoo import LICENSE, ZooEntry

__all__ = ["COCO_METRICS", "built_meta", "entry_meta", "file_size_mb", "pretrained_cfg"]

COCO_METRICS = "COCO-val2017"


def file_size_mb(num_params: int) -> float:
    """MB (2**20 bytes) of ``num_params`` float32 values, rounded to 3 places."""
    return round(num_params * 4 / 2**20, 3)


def _metrics(entry: ZooEntry) -> dict[str, dict[str, float]]:
    values = {"box_map": entry.box_ap, "mask_map": entry.mask_ap}
    published = {k: v for k, v in values.items() if v is not None}
    return {COCO_METRICS: published} if published else {}


def _docs(entry: ZooEntry) -> str:
    if entry.task == "backbone":
        return f"MMDetection's ImageNet {entry.normalization} {entry.backbone} ({entry.openmmlab_key}), converted."
    return (
        f"MMDetection's {entry.normalization} {entry.backbone} {entry.lr_schedule} COCO weights "
        f"({entry.mmdet_v2_config}), converted; detections match MMDetection's."
    )


def entry_meta(entry: ZooEntry) -> dict[str, Any]:
    """The metadata of ``entry``'s published weights (see the module docstring for each key).

    Entries without published weights get the architecture's keys only (``task``, ``categories``,
    ``num_params``, ``min_size``, ``_ops``).
    """
    meta: dict[str, Any] = {"task": entry.task}
    if entry.classes:
        meta["categories"] = ["__background__", *entry.classes]
    meta["num_params"] = entry.num_params
    meta["min_size"] = (1, 1)
    meta["_ops"] = entry.gflops
    if not entry.has_weights:
        return meta
    meta.update(
        _metrics=_metrics(entry),
        _file_size=file_size_mb(entry.num_params) if entry.num_params is not None else None,
        _docs=_docs(entry),
        recipe=entry.config_url or entry.model_url,
        sha256=entry.expected_sha256,
        license=LICENSE,
    )
    optional = {
        "log": entry.log_url,
        "mmdet_v2_config": entry.mmdet_v2_config,
        "mmdet_v3_config": entry.mmdet_v3_config,
        "openmmlab_key": entry.openmmlab_key,
        "train_mem_gb": entry.train_mem_gb,
        "inf_fps": entry.inf_fps,
    }
    meta.update({k: v for k, v in optional.items() if v is not None})  # absent where not published
    return meta


def built_meta(
    entry: ZooEntry, *, num_params: int, num_classes: Optional[int] = None, classes: Optional[list[str]] = None
) -> dict[str, Any]:
    """The ``meta`` of a model built from ``entry`` without its published weights (none, a file, a Hub repo).

    The architecture's keys only -- published metrics and hashes describe other weights:
    ``task``, ``categories`` (the trained weights' classes when they record them, else the
    entry's when the class count is the entry's), ``num_params`` (counted), ``min_size``, and
    ``_ops`` while the model has the entry's parameter count.
    """
    meta: dict[str, Any] = {"task": entry.task}
    if classes:
        meta["categories"] = ["__background__", *classes]
    elif entry.classes and num_classes in (None, entry.num_classes):
        meta["categories"] = ["__background__", *entry.classes]
    meta["num_params"] = num_params
    meta["min_size"] = (1, 1)
    if num_params == entry.num_params:
        meta["_ops"] = entry.gflops
    return meta


def pretrained_cfg(entry: ZooEntry, *, num_classes: Optional[int] = None, tag: Optional[str] = None) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of a model built from ``entry`` (kept small).

    Keys: ``architecture`` (the zoo name), ``tag`` (the weights' member name in lower case, e.g.
    ``"coco_v1"``; None without published weights), ``url``, ``hf_hub_id``, ``num_classes``
    (with background, for detectors), ``input_size`` (3, H, W) of the keep-ratio resize target
    (detectors), ``interpolation``, ``mean`` / ``std`` on timm's 0..1 scale, ``first_conv``,
    ``classifier`` (module names, as timm gives them) and ``license``.
    """
    detector = isinstance(entry.arch, DetectorArch)
    long_side, short_side = DEFAULT_SETTINGS.image_scale
    return {
        "architecture": entry.name,
        "tag": tag,
        "url": entry.model_url if tag else None,
        "hf_hub_id": entry.hf_repo if tag else None,
        "num_classes": num_classes if num_classes is not None else entry.num_classes,
        "input_size": (3, short_side, long_side) if detector else None,
        "interpolation": "bilinear",
        "mean": tuple(round(v / 255, 6) for v in DEFAULT_SETTINGS.image_mean),
        "std": tuple(round(v / 255, 6) for v in DEFAULT_SETTINGS.image_std),
        "first_conv": "backbone.body.conv1" if detector else "conv1",
        "classifier": "roi_heads.box_predictor.cls_score" if detector else "fc",
        "license": LICENSE,
    }
