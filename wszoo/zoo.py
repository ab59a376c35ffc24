"""THE table of wszoo: one row per published GN+WS detector and ImageNet backbone.

Every other view of the zoo -- the builders and ``hubconf.py`` entry points, ``wszoo list``,
the README's model table, the tests -- derives from :data:`ENTRIES` or is tested against it.
Detector rows reproduce MMDetection's published table (``configs/gn+ws/README.md``) exactly;
backbone URLs are those of ``open-mmlab://jhu/...`` in mmengine's ``hub/openmmlab.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Union

from .arch import DetectorArch, ResNetArch
from .coco import COCO_CLASSES

__all__ = ["ZooEntry", "ENTRIES", "LEGACY_MIRRORS", "WS_CITATION", "LICENSE"]

WS_CITATION = """@article{weightstandardization,
  author    = {Siyuan Qiao and Huiyu Wang and Chenxi Liu and Wei Shen and Alan Yuille},
  title     = {Weight Standardization},
  journal   = {arXiv preprint arXiv:1903.10520},
  year      = {2019},
}
"""
# The published weights and configs come from MMDetection, released under Apache-2.0.
LICENSE = "apache-2.0"

# OpenMMLab's object-storage hosts that served the same paths as download.openmmlab.com (links
# to them appear in MMDetection READMEs of 2020); tried after the original URL, path kept.
LEGACY_MIRRORS: tuple[str, ...] = (
    "https://openmmlab.oss-accelerate.aliyuncs.com",
    "https://openmmlab.oss-cn-hangzhou.aliyuncs.com",
)

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth$")


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo: architecture, published metrics and where its weights live.

    Attributes:
        name: Builder name (MMDetection v2 config name with '-' replaced by '_').
        task: ``"object_detection"``, ``"instance_segmentation"`` or ``"backbone"``.
        arch: The architecture the builder builds.
        backbone: Backbone as published ("R-50-FPN", "X-101-32x4d").
        normalization: "GN+WS" or "GN".
        style: MMDetection's ResNet style.
        lr_schedule: Published schedule ("1x", "2x", "20-23-24e"); None for backbones.
        train_mem_gb: Published training memory (GB); None where not published.
        inf_fps: Published inference speed (frames/s, V100); None where the table has '-'.
        box_ap: Published COCO val2017 box AP.
        mask_ap: Published COCO val2017 mask AP.
        model_url: Original download URL of the MMDetection checkpoint (None: no weights).
        config_url: Published config link.
        log_url: Published training log link.
        mmdet_v2_config: MMDetection v2 config name (an alias of ``name``).
        mmdet_v3_config: MMDetection v3 config name (an alias of ``name``).
        openmmlab_key: ``open-mmlab://...`` name of an ImageNet backbone (an alias).
        classes: Class names of labels 1..N (label 0 is background); empty for backbones.
        mirrors: Base URLs of legacy mirrors, tried after the original with its path kept.
        hf_repo: Hugging Face Hub repository (``ORG/REPO[@REVISION]``) of the converted weights,
            tried last and verified by their metadata (:func:`wszoo.hf_hub.verify_published`).
        sha256: The checkpoint's full sha256, when known (e.g. learnt from a Hub copy's
            ``source_sha256``): then downloads and cached files are checked against all 64 hex
            digits instead of the prefix in the file name.
        max_bytes: The most bytes a download of the checkpoint may take (default:
            :data:`wszoo.hub.download.DEFAULT_MAX_BYTES`); a source sending more is cut off.
        num_params: Parameters of the model the builder returns with its defaults (detectors
            with 81 classes, backbones without a classifier); counted by ``tools/model_stats.py``.
        gflops: Multiply-adds x 1e-9 (torchvision's ``_ops`` convention) of the convolutions and
            matrix products at one 800x1216 image (detectors) or 224x224 image (backbones); what
            is counted is defined in ``tools/model_stats.py``, which computes it.
    """

    name: str
    task: str
    arch: Union[DetectorArch, ResNetArch]
    backbone: str
    normalization: str = "GN+WS"
    style: str = "pytorch"
    lr_schedule: Optional[str] = None
    train_mem_gb: Optional[float] = None
    inf_fps: Optional[float] = None
    box_ap: Optional[float] = None
    mask_ap: Optional[float] = None
    model_url: Optional[str] = None
    config_url: Optional[str] = None
    log_url: Optional[str] = None
    mmdet_v2_config: Optional[str] = None
    mmdet_v3_config: Optional[str] = None
    openmmlab_key: Optional[str] = None
    classes: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = field(default=())
    hf_repo: Optional[str] = None
    sha256: Optional[str] = None
    max_bytes: Optional[int] = None
    num_params: Optional[int] = None
    gflops: Optional[float] = None

    def __post_init__(self) -> None:
        if self.sha256 is not None:
            digest = self.sha256.lower()
            if len(digest) != 64 or not set(digest) <= set("0123456789abcdef"):
                raise ValueError(f"{self.name}: sha256 must be 64 hex digits, got {self.sha256!r}")
            if self.sha256_prefix and not digest.startswith(self.sha256_prefix):
                raise ValueError(f"{self.name}: sha256 {digest} does not start with {self.sha256_prefix} (file name)")
        if self.max_bytes is not None and (isinstance(self.max_bytes, bool) or self.max_bytes < 1):
            raise ValueError(f"{self.name}: max_bytes must be a positive int, got {self.max_bytes!r}")

    @property
    def expected_sha256(self) -> Optional[str]:
        """What a download must hash to: the pinned full ``sha256`` if known, else the file name's prefix."""
        return self.sha256.lower() if self.sha256 else self.sha256_prefix

    @property
    def has_weights(self) -> bool:
        return self.model_url is not None

    @property
    def file_name(self) -> Optional[str]:
        """The checkpoint's file name, as in its URL."""
        return self.model_url.rsplit("/", 1)[-1] if self.model_url else None

    @property
    def sha256_prefix(self) -> Optional[str]:
        """The leading hex digits of the file's sha256, as OpenMMLab put them in its name."""
        match = _HASH_IN_NAME.search(self.file_name or "")
        return match.group(1) if match else None

    @property
    def aliases(self) -> tuple[str, ...]:
        """Other names accepted for this entry (MMDetection config names, open-mmlab keys)."""
        names = (self.mmdet_v2_config, self.mmdet_v3_config, self.openmmlab_key)
        return tuple(n for n in names if n and n != self.name)

    @property
    def num_classes(self) -> Optional[int]:
        """Classes including background, for detectors."""
        return len(self.classes) + 1 if self.classes else None


def _detector(name: str, *, arch: DetectorArch, **fields) -> ZooEntry:
    task = "instance_segmentation" if arch.with_mask else "object_detection"
    mirrors = LEGACY_MIRRORS if fields.get("model_url") else ()
    return ZooEntry(name=name, task=task, arch=arch, classes=COCO_CLASSES, mirrors=mirrors, **fields)


def _backbone(name: str, *, arch: ResNetArch, **fields) -> ZooEntry:
    return ZooEntry(name=name, task="backbone", arch=arch, mirrors=LEGACY_MIRRORS, **fields)


ENTRIES: tuple[ZooEntry, ...] = (
    # ---- Faster R-CNN and Mask R-CNN, as published in MMDetection's configs/gn+ws ----
    _detector(
        "faster_rcnn_r50_fpn_gn_ws_all_1x_coco",
        arch=DetectorArch(depth=50),
        backbone="R-50-FPN",
        num_params=43070948,
        gflops=311.29,
        lr_schedule="1x",
        train_mem_gb=5.9,
        inf_fps=11.7,
        box_ap=39.7,
        mask_ap=None,
        mmdet_v2_config="faster_rcnn_r50_fpn_gn_ws-all_1x_coco",
        mmdet_v3_config="faster-rcnn_r50_fpn_gn-ws-all_1x_coco",
        config_url="https://github.com/open-mmlab/mmdetection/tree/master/configs/gn%2Bws/faster_rcnn_r50_fpn_gn_ws-all_1x_coco.py",
        model_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/faster_rcnn_r50_fpn_gn_ws-all_1x_coco/faster_rcnn_r50_fpn_gn_ws-all_1x_coco_20200130-613d9fe2.pth",
        log_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/faster_rcnn_r50_fpn_gn_ws-all_1x_coco/faster_rcnn_r50_fpn_gn_ws-all_1x_coco_20200130_210936.log.json",
    ),
    _detector(
        "faster_rcnn_r101_fpn_gn_ws_all_1x_coco",
        arch=DetectorArch(depth=101),
        backbone="R-101-FPN",
        num_params=62063076,
        gflops=383.262,
        lr_schedule="1x",
        train_mem_gb=8.9,
        inf_fps=9.0,
        box_ap=41.7,
        mask_ap=None,
        mmdet_v2_config="faster_rcnn_r101_fpn_gn_ws-all_1x_coco",
        mmdet_v3_config="faster-rcnn_r101_fpn_gn-ws-all_1x_coco",
        config_url="https://github.com/open-mmlab/mmdetection/tree/master/configs/gn%2Bws/faster_rcnn_r101_fpn_gn_ws-all_1x_coco.py",
        model_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/faster_rcnn_r101_fpn_gn_ws-all_1x_coco/faster_rcnn_r101_fpn_gn_ws-all_1x_coco_20200205-a93b0d75.pth",
        log_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/faster_rcnn_r101_fpn_gn_ws-all_1x_coco/faster_rcnn_r101_fpn_gn_ws-all_1x_coco_20200205_232146.log.json",
    ),
    _detector(
        "faster_rcnn_x50_32x4d_fpn_gn_ws_all_1x_coco",
        arch=DetectorArch(depth=50, groups=32, base_width=4),
        backbone="X-50-32x4d-FPN",
        num_params=42542820,
        gflops=314.029,
        lr_schedule="1x",
        train_mem_gb=7.0,
        inf_fps=10.3,
        box_ap=40.7,
        mask_ap=None,
        mmdet_v2_config="faster_rcnn_x50_32x4d_fpn_gn_ws-all_1x_coco",
        mmdet_v3_config="faster-rcnn_x50-32x4d_fpn_gn-ws-all_1x_coco",
        config_url="https://github.com/open-mmlab/mmdetection/tree/master/configs/gn%2Bws/faster_rcnn_x50_32x4d_fpn_gn_ws-all_1x_coco.py",
        model_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/faster_rcnn_x50_32x4d_fpn_gn_ws-all_1x_coco/faster_rcnn_x50_32x4d_fpn_gn_ws-all_1x_coco_20200203-839c5d9d.pth",
        log_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/faster_rcnn_x50_32x4d_fpn_gn_ws-all_1x_coco/faster_rcnn_x50_32x4d_fpn_gn_ws-all_1x_coco_20200203_220113.log.json",
    ),
    _detector(
        "faster_rcnn_x101_32x4d_fpn_gn_ws_all_1x_coco",
        arch=DetectorArch(depth=101, groups=32, base_width=4),
        backbone="X-101-32x4d-FPN",
        num_params=61691620,
        gflops=386.53,
        lr_schedule="1x",
        train_mem_gb=10.8,
        inf_fps=7.6,
        box_ap=42.1,
        mask_ap=None,
        mmdet_v2_config="faster_rcnn_x101_32x4d_fpn_gn_ws-all_1x_coco",
        mmdet_v3_config="faster-rcnn_x101-32x4d_fpn_gn-ws-all_1x_coco",
        config_url="https://github.com/open-mmlab/mmdetection/tree/master/configs/gn%2Bws/faster_rcnn_x101_32x4d_fpn_gn_ws-all_1x_coco.py",
        model_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/faster_rcnn_x101_32x4d_fpn_gn_ws-all_1x_coco/faster_rcnn_x101_32x4d_fpn_gn_ws-all_1x_coco_20200212-27da1bc2.pth",
        log_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/faster_rcnn_x101_32x4d_fpn_gn_ws-all_1x_coco/faster_rcnn_x101_32x4d_fpn_gn_ws-all_1x_coco_20200212_195302.log.json",
    ),
    _detector(
        "mask_rcnn_r50_fpn_gn_ws_all_2x_coco",
        arch=DetectorArch(depth=50, with_mask=True),
        backbone="R-50-FPN",
        num_params=45715509,
        gflops=364.296,
        lr_schedule="2x",
        train_mem_gb=7.3,
        inf_fps=10.5,
        box_ap=40.6,
        mask_ap=36.6,
        mmdet_v2_config="mask_rcnn_r50_fpn_gn_ws-all_2x_coco",
        mmdet_v3_config="mask-rcnn_r50_fpn_gn-ws-all_2x_coco",
        config_url="https://github.com/open-mmlab/mmdetection/tree/master/configs/gn%2Bws/mask_rcnn_r50_fpn_gn_ws-all_2x_coco.py",
        model_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_r50_fpn_gn_ws-all_2x_coco/mask_rcnn_r50_fpn_gn_ws-all_2x_coco_20200226-16acb762.pth",
        log_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_r50_fpn_gn_ws-all_2x_coco/mask_rcnn_r50_fpn_gn_ws-all_2x_coco_20200226_062128.log.json",
    ),
    _detector(
        "mask_rcnn_r101_fpn_gn_ws_all_2x_coco",
        arch=DetectorArch(depth=101, with_mask=True),
        backbone="R-101-FPN",
        num_params=64707637,
        gflops=436.268,
        lr_schedule="2x",
        train_mem_gb=10.3,
        inf_fps=8.6,
        box_ap=42.0,
        mask_ap=37.7,
        mmdet_v2_config="mask_rcnn_r101_fpn_gn_ws-all_2x_coco",
        mmdet_v3_config="mask-rcnn_r101_fpn_gn-ws-all_2x_coco",
        config_url="https://github.com/open-mmlab/mmdetection/tree/master/configs/gn%2Bws/mask_rcnn_r101_fpn_gn_ws-all_2x_coco.py",
        model_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_r101_fpn_gn_ws-all_2x_coco/mask_rcnn_r101_fpn_gn_ws-all_2x_coco_20200212-ea357cd9.pth",
        log_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_r101_fpn_gn_ws-all_2x_coco/mask_rcnn_r101_fpn_gn_ws-all_2x_coco_20200212_213627.log.json",
    ),
    _detector(
        "mask_rcnn_x50_32x4d_fpn_gn_ws_all_2x_coco",
        arch=DetectorArch(depth=50, groups=32, base_width=4, with_mask=True),
        backbone="X-50-32x4d-FPN",
        num_params=45187381,
        gflops=367.035,
        lr_schedule="2x",
        train_mem_gb=8.4,
        inf_fps=9.3,
        box_ap=41.1,
        mask_ap=37.0,
        mmdet_v2_config="mask_rcnn_x50_32x4d_fpn_gn_ws-all_2x_coco",
        mmdet_v3_config="mask-rcnn_x50-32x4d_fpn_gn-ws-all_2x_coco",
        config_url="https://github.com/open-mmlab/mmdetection/tree/master/configs/gn%2Bws/mask_rcnn_x50_32x4d_fpn_gn_ws-all_2x_coco.py",
        model_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_x50_32x4d_fpn_gn_ws-all_2x_coco/mask_rcnn_x50_32x4d_fpn_gn_ws-all_2x_coco_20200216-649fdb6f.pth",
        log_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_x50_32x4d_fpn_gn_ws-all_2x_coco/mask_rcnn_x50_32x4d_fpn_gn_ws-all_2x_coco_20200216_201500.log.json",
    ),
    _detector(
        "mask_rcnn_x101_32x4d_fpn_gn_ws_all_2x_coco",
        arch=DetectorArch(depth=101, groups=32, base_width=4, with_mask=True),
        backbone="X-101-32x4d-FPN",
        num_params=64336181,
        gflops=439.536,
        lr_schedule="2x",
        train_mem_gb=12.2,
        inf_fps=7.1,
        box_ap=42.1,
        mask_ap=37.9,
        mmdet_v2_config="mask_rcnn_x101_32x4d_fpn_gn_ws-all_2x_coco",
        mmdet_v3_config="mask-rcnn_x101-32x4d_fpn_gn-ws-all_2x_coco",
        config_url="https://github.com/open-mmlab/mmdetection/tree/master/configs/gn%2Bws/mask_rcnn_x101_32x4d_fpn_gn_ws-all_2x_coco.py",
        model_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_x101_32x4d_fpn_gn_ws-all_2x_coco/mask_rcnn_x101_32x4d_fpn_gn_ws-all_2x_coco_20200319-33fb95b5.pth",
        log_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_x101_32x4d_fpn_gn_ws-all_2x_coco/mask_rcnn_x101_32x4d_fpn_gn_ws-all_2x_coco_20200319_104101.log.json",
    ),
    _detector(
        "mask_rcnn_r50_fpn_gn_ws_all_20_23_24e_coco",
        arch=DetectorArch(depth=50, with_mask=True),
        backbone="R-50-FPN",
        num_params=45715509,
        gflops=364.296,
        lr_schedule="20-23-24e",
        train_mem_gb=7.3,
        inf_fps=None,
        box_ap=41.1,
        mask_ap=37.1,
        mmdet_v2_config="mask_rcnn_r50_fpn_gn_ws-all_20_23_24e_coco",
        mmdet_v3_config="mask-rcnn_r50_fpn_gn-ws-all_20-23-24e_coco",
        config_url="https://github.com/open-mmlab/mmdetection/tree/master/configs/gn%2Bws/mask_rcnn_r50_fpn_gn_ws-all_20_23_24e_coco.py",
        model_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_r50_fpn_gn_ws-all_20_23_24e_coco/mask_rcnn_r50_fpn_gn_ws-all_20_23_24e_coco_20200213-487d1283.pth",
        log_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_r50_fpn_gn_ws-all_20_23_24e_coco/mask_rcnn_r50_fpn_gn_ws-all_20_23_24e_coco_20200213_035123.log.json",
    ),
    _detector(
        "mask_rcnn_r101_fpn_gn_ws_all_20_23_24e_coco",
        arch=DetectorArch(depth=101, with_mask=True),
        backbone="R-101-FPN",
        num_params=64707637,
        gflops=436.268,
        lr_schedule="20-23-24e",
        train_mem_gb=10.3,
        inf_fps=None,
        box_ap=43.1,
        mask_ap=38.6,
        mmdet_v2_config="mask_rcnn_r101_fpn_gn_ws-all_20_23_24e_coco",
        mmdet_v3_config="mask-rcnn_r101_fpn_gn-ws-all_20-23-24e_coco",
        config_url="https://github.com/open-mmlab/mmdetection/tree/master/configs/gn%2Bws/mask_rcnn_r101_fpn_gn_ws-all_20_23_24e_coco.py",
        model_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_r101_fpn_gn_ws-all_20_23_24e_coco/mask_rcnn_r101_fpn_gn_ws-all_20_23_24e_coco_20200213-57b5a50f.pth",
        log_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_r101_fpn_gn_ws-all_20_23_24e_coco/mask_rcnn_r101_fpn_gn_ws-all_20_23_24e_coco_20200213_130142.log.json",
    ),
    _detector(
        "mask_rcnn_x50_32x4d_fpn_gn_ws_all_20_23_24e_coco",
        arch=DetectorArch(depth=50, groups=32, base_width=4, with_mask=True),
        backbone="X-50-32x4d-FPN",
        num_params=45187381,
        gflops=367.035,
        lr_schedule="20-23-24e",
        train_mem_gb=8.4,
        inf_fps=None,
        box_ap=42.1,
        mask_ap=38.0,
        mmdet_v2_config="mask_rcnn_x50_32x4d_fpn_gn_ws-all_20_23_24e_coco",
        mmdet_v3_config="mask-rcnn_x50-32x4d_fpn_gn-ws-all_20-23-24e_coco",
        config_url="https://github.com/open-mmlab/mmdetection/tree/master/configs/gn%2Bws/mask_rcnn_x50_32x4d_fpn_gn_ws-all_20_23_24e_coco.py",
        model_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_x50_32x4d_fpn_gn_ws-all_20_23_24e_coco/mask_rcnn_x50_32x4d_fpn_gn_ws-all_20_23_24e_coco_20200226-969bcb2c.pth",
        log_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_x50_32x4d_fpn_gn_ws-all_20_23_24e_coco/mask_rcnn_x50_32x4d_fpn_gn_ws-all_20_23_24e_coco_20200226_093732.log.json",
    ),
    _detector(
        "mask_rcnn_x101_32x4d_fpn_gn_ws_all_20_23_24e_coco",
        arch=DetectorArch(depth=101, groups=32, base_width=4, with_mask=True),
        backbone="X-101-32x4d-FPN",
        num_params=64336181,
        gflops=439.536,
        lr_schedule="20-23-24e",
        train_mem_gb=12.2,
        inf_fps=None,
        box_ap=42.7,
        mask_ap=38.5,
        mmdet_v2_config="mask_rcnn_x101_32x4d_fpn_gn_ws-all_20_23_24e_coco",
        mmdet_v3_config="mask-rcnn_x101-32x4d_fpn_gn-ws-all_20-23-24e_coco",
        config_url="https://github.com/open-mmlab/mmdetection/tree/master/configs/gn%2Bws/mask_rcnn_x101_32x4d_fpn_gn_ws-all_20_23_24e_coco.py",
        model_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_x101_32x4d_fpn_gn_ws-all_20_23_24e_coco/mask_rcnn_x101_32x4d_fpn_gn_ws-all_20_23_24e_coco_20200316-e6cd35ef.pth",
        log_url="https://download.openmmlab.com/mmdetection/v2.0/gn%2Bws/mask_rcnn_x101_32x4d_fpn_gn_ws-all_20_23_24e_coco/mask_rcnn_x101_32x4d_fpn_gn_ws-all_20_23_24e_coco_20200316_013741.log.json",
    ),
    # ---- ImageNet backbones (open-mmlab://jhu/...); the detectors start from the GN+WS ones ----
    _backbone(
        "resnet50_gn_ws",
        arch=ResNetArch(depth=50),
        backbone="R-50",
        num_params=23508032,
        gflops=4.087,
        normalization="GN+WS",
        openmmlab_key="open-mmlab://jhu/resnet50_gn_ws",
        model_url="https://download.openmmlab.com/pretrain/third_party/resnet50_gn_ws-15beedd8.pth",
    ),
    _backbone(
        "resnet101_gn_ws",
        arch=ResNetArch(depth=101),
        backbone="R-101",
        num_params=42500160,
        gflops=7.799,
        normalization="GN+WS",
        openmmlab_key="open-mmlab://jhu/resnet101_gn_ws",
        model_url="https://download.openmmlab.com/pretrain/third_party/resnet101_gn_ws-3e3c308c.pth",
    ),
    _backbone(
        "resnext50_32x4d_gn_ws",
        arch=ResNetArch(depth=50, groups=32, base_width=4),
        backbone="X-50-32x4d",
        num_params=22979904,
        gflops=4.228,
        normalization="GN+WS",
        openmmlab_key="open-mmlab://jhu/resnext50_32x4d_gn_ws",
        model_url="https://download.openmmlab.com/pretrain/third_party/resnext50_32x4d_gn_ws-0d87ac85.pth",
    ),
    _backbone(
        "resnext101_32x4d_gn_ws",
        arch=ResNetArch(depth=101, groups=32, base_width=4),
        backbone="X-101-32x4d",
        num_params=42128704,
        gflops=7.968,
        normalization="GN+WS",
        openmmlab_key="open-mmlab://jhu/resnext101_32x4d_gn_ws",
        model_url="https://download.openmmlab.com/pretrain/third_party/resnext101_32x4d_gn_ws-34ac1a9e.pth",
    ),
    _backbone(
        "resnext50_32x4d_gn",
        arch=ResNetArch(depth=50, groups=32, base_width=4, weight_standardization=False),
        backbone="X-50-32x4d",
        num_params=22979904,
        gflops=4.228,
        normalization="GN",
        openmmlab_key="open-mmlab://jhu/resnext50_32x4d_gn",
        model_url="https://download.openmmlab.com/pretrain/third_party/resnext50_32x4d_gn-c7e8b754.pth",
    ),
    _backbone(
        "resnext101_32x4d_gn",
        arch=ResNetArch(depth=101, groups=32, base_width=4, weight_standardization=False),
        backbone="X-101-32x4d",
        num_params=42128704,
        gflops=7.968,
        normalization="GN",
        openmmlab_key="open-mmlab://jhu/resnext101_32x4d_gn",
        model_url="https://download.openmmlab.com/pretrain/third_party/resnext101_32x4d_gn-ac3bb84e.pth",
    ),
    # ---- small architectures without published weights, for tests and experiments ----
    _detector(
        "faster_rcnn_r18_fpn_gn_ws",
        arch=DetectorArch(depth=18),
        backbone="R-18-FPN",
        num_params=30002148,
        gflops=261.607,
    ),
    _detector(
        "mask_rcnn_r18_fpn_gn_ws",
        arch=DetectorArch(depth=18, with_mask=True),
        backbone="R-18-FPN",
        num_params=32646709,
        gflops=314.613,
    ),
)
