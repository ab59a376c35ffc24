"""Opt-in parity check: real MMDetection 3.3 vs wszoo on the same weights and photographs.

MMDetection is *not* a dependency of wszoo. This script needs a separate environment with
``mmdet==3.3.0``, ``mmengine==0.10.7`` and either full ``mmcv==2.1.0`` (compiled ops) or
``mmcv-lite==2.1.0``; with mmcv-lite the compiled ops these detectors use (``nms``,
``roi_align_forward`` and, for the training comparison of ``mmdet_train_parity.py``,
``roi_align_backward``) are supplied by a stand-in ``mmcv._ext`` that calls
``torchvision.ops`` (see :func:`install_mmcv_ext_shim`), plus ``scikit-image`` for the test
photographs. Set up, e.g.::

    python3 -m venv /work/mmdet_venv
    /work/mmdet_venv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy
    /work/mmdet_venv/bin/pip install mmengine==0.10.7 opencv-python==4.14.0.94 \
        setuptools==80.9.0 mmdet==3.3.0 mmcv-lite==2.1.0 scikit-image==0.26.0 safetensors
    # wszoo itself is imported from the checkout (PYTHONPATH=.); its own dependencies:
    /work/mmdet_venv/bin/pip install "huggingface_hub>=1.0" "requests>=2.28" "filelock>=3.8" "tqdm>=4.60" pillow

Run (from the repository root)::

    PYTHONPATH=. /work/mmdet_venv/bin/python parity/mmdet_parity.py
    PYTHONPATH=. /work/mmdet_venv/bin/python parity/mmdet_parity.py --variants all --images astronaut

What it does, per variant: builds MMDetection's detector from the config shipped inside the
mmdet package (``mmdet/.mim/configs/gn+ws/``), gives it deterministic random weights (seeded,
with the R-CNN classifier scaled so that many scores pass 0.05), converts that state dict with
wszoo's converter, loads it strictly into ``wszoo.modeling.detector.build_detector`` and runs both on the
same photographs with the same torch thread count. It compares every stage:

* ``input``: the normalised, padded batch (covers resize, normalisation and padding);
* ``C2..C5``: backbone outputs; ``P2..P6``: FPN outputs;
* ``proposals``: RPN proposals (count and max |Δ|);
* ``rcnn(mm props)``: wszoo's R-CNN fed MMDetection's proposals and features (isolates the
  R-CNN stage from the RPN);
* ``final``: ``mmdet.apis.inference_detector`` vs the wszoo model called as a whole:
  detections, labels (MMDetection's + 1), max |Δscore|, max |Δbox|, differing mask pixels.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import math
import os
import sys
import time
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

NUM_THREADS = 2

# name -> (config file inside mmdet/.mim/configs/gn+ws, depth, groups, base_width, with_mask)
VARIANTS: dict[str, tuple[str, int, int, int, bool]] = {
    "faster_r50_1x": ("faster-rcnn_r50_fpn_gn-ws-all_1x_coco.py", 50, 1, 64, False),
    "faster_r101_1x": ("faster-rcnn_r101_fpn_gn-ws-all_1x_coco.py", 101, 1, 64, False),
    "faster_x50_1x": ("faster-rcnn_x50-32x4d_fpn_gn-ws-all_1x_coco.py", 50, 32, 4, False),
    "faster_x101_1x": ("faster-rcnn_x101-32x4d_fpn_gn-ws-all_1x_coco.py", 101, 32, 4, False),
    "mask_r50_2x": ("mask-rcnn_r50_fpn_gn-ws-all_2x_coco.py", 50, 1, 64, True),
    "mask_r101_2x": ("mask-rcnn_r101_fpn_gn-ws-all_2x_coco.py", 101, 1, 64, True),
    "mask_x50_2x": ("mask-rcnn_x50-32x4d_fpn_gn-ws-all_2x_coco.py", 50, 32, 4, True),
    "mask_x101_2x": ("mask-rcnn_x101-32x4d_fpn_gn-ws-all_2x_coco.py", 101, 32, 4, True),
    "mask_r50_24e": ("mask-rcnn_r50_fpn_gn-ws-all_20-23-24e_coco.py", 50, 1, 64, True),
    "mask_r101_24e": ("mask-rcnn_r101_fpn_gn-ws-all_20-23-24e_coco.py", 101, 1, 64, True),
    "mask_x50_24e": ("mask-rcnn_x50-32x4d_fpn_gn-ws-all_20-23-24e_coco.py", 50, 32, 4, True),
    "mask_x101_24e": ("mask-rcnn_x101-32x4d_fpn_gn-ws-all_20-23-24e_coco.py", 101, 32, 4, True),
}
DEFAULT_VARIANTS = ("faster_r50_1x", "mask_r50_2x")
IMAGES = ("astronaut", "chelsea", "coffee", "crop")
DEFAULT_IMAGES = IMAGES


# --------------------------------------------------------------------------------------------
# MMCV set-up
# --------------------------------------------------------------------------------------------


def _shim_nms(bboxes, scores, iou_threshold, offset=0, **_unused):
    """mmcv ``ext_module.nms``: keep indices, by descending score (``nms_cpu`` semantics)."""
    import torchvision

    if int(offset) != 0:
        raise NotImplementedError("the mmcv._ext stand-in supports nms with offset=0 only")
    return torchvision.ops.nms(bboxes, scores, float(iou_threshold))


def _shim_roi_align_forward(
    input,
    rois,
    output,
    argmax_y,
    argmax_x,
    *,
    aligned_height,
    aligned_width,
    spatial_scale,
    sampling_ratio,
    pool_mode,
    aligned,
):
    """mmcv ``ext_module.roi_align_forward``: writes the pooled features into ``output``."""
    import torchvision

    if int(pool_mode) != 1:
        raise NotImplementedError("the mmcv._ext stand-in supports roi_align with pool_mode='avg' only")
    pooled = torchvision.ops.roi_align(
        input,
        rois,
        (int(aligned_height), int(aligned_width)),
        spatial_scale=float(spatial_scale),
        sampling_ratio=int(sampling_ratio),
        aligned=bool(aligned),
    )
    output.copy_(pooled)


def _shim_roi_align_backward(
    grad_output,
    rois,
    argmax_y,
    argmax_x,
    grad_input,
    *,
    aligned_height,
    aligned_width,
    spatial_scale,
    sampling_ratio,
    pool_mode,
    aligned,
):
    """mmcv ``ext_module.roi_align_backward`` (training parity): autograd of the torchvision op.

    RoIAlign is linear in its input, so the gradient is that of ``torchvision.ops.roi_align``
    at any input; it is written into ``grad_input``.
    """
    import torchvision

    if int(pool_mode) != 1:
        raise NotImplementedError("the mmcv._ext stand-in supports roi_align with pool_mode='avg' only")
    with torch.enable_grad():
        probe = torch.zeros_like(grad_input, requires_grad=True)
        pooled = torchvision.ops.roi_align(
            probe,
            rois,
            (int(aligned_height), int(aligned_width)),
            spatial_scale=float(spatial_scale),
            sampling_ratio=int(sampling_ratio),
            aligned=bool(aligned),
        )
        (grad,) = torch.autograd.grad(pooled, probe, grad_output)
    grad_input.copy_(grad)


class _ExtShim(types.ModuleType):
    """Stand-in for mmcv's compiled ``_ext``: nms and roi_align (forward, backward); the rest raise."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise NotImplementedError(f"mmcv._ext.{name} is not provided by the parity stand-in (mmcv-lite)")

        missing.__name__ = name
        return missing


def install_mmcv_ext_shim() -> bool:
    """Puts the stand-in ``mmcv._ext`` into ``sys.modules`` unless real compiled ops exist.

    Must run before ``mmcv.ops`` is first imported. Returns True if the stand-in is in use.
    """
    existing = sys.modules.get("mmcv._ext")
    if existing is not None:
        return isinstance(existing, _ExtShim)
    if "mmcv.ops" in sys.modules:
        raise RuntimeError("mmcv.ops was imported before the mmcv._ext stand-in could be installed")
    try:
        if importlib.util.find_spec("mmcv._ext") is not None:
            return False  # full mmcv with compiled ops
    except ModuleNotFoundError:
        pass
    shim = _ExtShim("mmcv._ext", "torchvision-backed stand-in for mmcv's compiled ops (parity check only)")
    # A spec with no loader: pkgutil.find_loader (mmengine's mmcv_full_available) then says
    # "no compiled mmcv", which is true, instead of raising on a missing __spec__.
    shim.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", None)
    shim.nms = _shim_nms
    shim.roi_align_forward = _shim_roi_align_forward
    shim.roi_align_backward = _shim_roi_align_backward
    sys.modules["mmcv._ext"] = shim
    return True


def mmdet_available() -> bool:
    """Whether mmdet, mmengine and mmcv can be imported (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("mmdet", "mmengine", "mmcv"))


def setup() -> None:
    """Thread count, the mmcv stand-in and MMDetection's registry scope."""
    torch.set_num_threads(NUM_THREADS)
    install_mmcv_ext_shim()
    warnings.filterwarnings("ignore", module=r"mmengine|mmdet|mmcv")
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")


# --------------------------------------------------------------------------------------------
# Models and weights
# --------------------------------------------------------------------------------------------


def config_path(variant: str) -> str:
    import mmdet

    name = VARIANTS[variant][0]
    path = os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs", "gn+ws", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is mmdet 3.3 installed with its configs?")
    return path


def build_mmdet(variant: str):
    """MMDetection's detector for ``variant`` from the package's own config, on CPU, eval."""
    from mmdet.apis import init_detector
    from mmengine.config import Config

    cfg = Config.fromfile(config_path(variant))
    cfg.model.backbone.init_cfg = None  # no ImageNet download
    return init_detector(cfg, checkpoint=None, palette="random", device="cpu")


def randomize_(model: torch.nn.Module, seed: int = 0, *, cls_gain: float = 3.0, mask_gain: float = 6.0) -> None:
    """Deterministic random weights that make the detector produce many detections.

    Every parameter gets seeded values (per key, in state-dict order): conv/linear weights
    ~ N(0, 1/fan_in) (so activations stay O(1)), biases and GroupNorm shifts ~ N(0, 0.1),
    GroupNorm scales ~ 1 + N(0, 0.1). Then the R-CNN classifier is scaled by ``cls_gain`` and its
    background logit lowered, so softmax scores are peaked and many exceed 0.05; the mask
    logits are scaled by ``mask_gain`` so masks are not all near 0.5.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() > 1:
                fan_in = param[0].numel()
                if "conv_transpose" in name or name.endswith("upsample.weight"):
                    fan_in = param.shape[0] * param.shape[2] * param.shape[3]
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(fan_in))
            elif ".gn" in name or "downsample.1" in name or name.endswith(("gn1.weight", "gn1.bias")):
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + 0.1 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))
        head = model.roi_head.bbox_head
        head.fc_cls.weight.mul_(cls_gain)
        head.fc_cls.bias.mul_(cls_gain)
        head.fc_cls.bias[-1] -= 3.0  # background is the last column in MMDetection
        if getattr(model.roi_head, "with_mask", False):
            logits = model.roi_head.mask_head.conv_logits
            logits.weight.mul_(mask_gain)


def build_wszoo(variant: str, mmdet_state_dict: dict[str, torch.Tensor]):
    """wszoo's detector for ``variant``, loaded (strictly) from a converted MMDetection state dict."""
    from wszoo.arch import DetectorArch
    from wszoo.conversion import DETECTOR_RULES, convert_state_dict
    from wszoo.modeling.detector import build_detector

    _, depth, groups, base_width, with_mask = VARIANTS[variant]
    arch = DetectorArch(depth=depth, groups=groups, base_width=base_width, with_mask=with_mask)
    model = build_detector(arch=arch, num_classes=81, score_thresh=0.05, resize_backend="cv2").eval()
    target_shapes = {k: v.shape for k, v in model.state_dict().items()}
    native, _report = convert_state_dict(mmdet_state_dict, rules=DETECTOR_RULES, target_shapes=target_shapes)
    model.load_state_dict(native, strict=True)
    return model


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def load_image(name: str) -> np.ndarray:
    """An RGB uint8 (H, W, 3) photograph from scikit-image; ``crop`` is an odd-sized crop."""
    from skimage import data

    if name == "crop":  # 301 x 417: odd on both sides, odd sizes at every FPN level
        return np.ascontiguousarray(data.astronaut()[37:338, 55:472])
    if name not in ("astronaut", "chelsea", "coffee"):
        raise ValueError(f"unknown image {name!r}; choose from {IMAGES}")
    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


# --------------------------------------------------------------------------------------------
# Running both
# --------------------------------------------------------------------------------------------


def _mmdet_pipeline(model):
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg

    cfg = model.cfg.copy()
    pipeline = get_test_pipeline_cfg(cfg)
    pipeline[0].type = "mmdet.LoadImageFromNDArray"
    return Compose(pipeline)


@torch.no_grad()
def run_mmdet_stages(model, rgb: np.ndarray) -> dict[str, Any]:
    """MMDetection's stages on one RGB image, as ``TwoStageDetector.predict`` runs them."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    data = _mmdet_pipeline(model)(dict(img=bgr, img_id=0))
    batch = model.data_preprocessor({"inputs": [data["inputs"]], "data_samples": [data["data_samples"]]}, False)
    inputs, samples = batch["inputs"], batch["data_samples"]
    backbone = model.backbone(inputs)
    fpn = model.neck(backbone)
    rpn = model.rpn_head.predict(list(fpn), samples, rescale=False)
    dets = model.roi_head.predict(list(fpn), rpn, samples, rescale=True)
    return {
        "resized_bgr": data["inputs"],  # uint8 (3, h, w) BGR after Resize
        "input": inputs,
        "backbone": list(backbone),
        "fpn": list(fpn),
        "proposals": rpn[0].bboxes,
        "proposal_scores": rpn[0].scores,
        "dets": _mm_instances(dets[0]),
        "meta": samples[0].metainfo,
    }


def _mm_instances(inst) -> dict[str, torch.Tensor]:
    out = {"boxes": inst.bboxes, "scores": inst.scores, "labels": inst.labels + 1}
    if "masks" in inst:
        out["masks"] = torch.as_tensor(inst.masks).bool()
    return out


@torch.no_grad()
def run_mmdet(model, rgb: np.ndarray) -> dict[str, torch.Tensor]:
    """``mmdet.apis.inference_detector`` on one RGB image (given as BGR, as mmdet expects)."""
    from mmdet.apis import inference_detector

    result = inference_detector(model, np.ascontiguousarray(rgb[..., ::-1]))
    return _mm_instances(result.pred_instances)


@torch.no_grad()
def run_wszoo_stages(model, rgb: np.ndarray, mm_fpn=None, mm_proposals=None) -> dict[str, Any]:
    image = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    image_list, _, metas = model.transform([image])
    body = model.backbone.body.forward_features(image_list.tensors)
    feats = model.backbone(image_list.tensors)
    proposals, _ = model.rpn(image_list, feats)
    out = {
        "input": image_list.tensors,
        "backbone": body,
        "fpn": list(feats.values()),
        "proposals": proposals[0],
        "meta": metas[0],
    }
    if mm_fpn is not None and mm_proposals is not None:
        mm_feats = dict(zip(feats.keys(), mm_fpn))
        out["dets_from_mm_proposals"] = _ws_instances(model.roi_heads.predict(mm_feats, [mm_proposals], metas)[0])
    return out


def _ws_instances(det: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {"boxes": det["boxes"], "scores": det["scores"], "labels": det["labels"]}
    if "masks" in det:
        out["masks"] = det["masks"][:, 0] >= 0.5
    return out


@torch.no_grad()
def run_wszoo(model, rgb: np.ndarray) -> dict[str, torch.Tensor]:
    image = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    return _ws_instances(model([image])[0])


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------


@dataclass
class DetComparison:
    """How two detection sets differ (MMDetection's vs wszoo's, in order)."""

    n_mm: int
    n_ws: int
    labels_equal: bool
    max_score_diff: float
    max_box_diff: float
    mask_pixels_diff: Optional[int] = None  # total over detections; None for Faster R-CNN
    mask_pixels_max: Optional[int] = None  # worst single detection
    mask_pixels_total: Optional[int] = None  # foreground pixels of MMDetection's masks

    @property
    def same_count(self) -> bool:
        return self.n_mm == self.n_ws

    def row(self) -> str:
        masks = "-" if self.mask_pixels_diff is None else f"{self.mask_pixels_diff}/{self.mask_pixels_total}"
        return (
            f"n={self.n_mm}/{self.n_ws} labels={'=' if self.labels_equal else 'DIFF'} "
            f"|Δscore|={self.max_score_diff:.3g} |Δbox|={self.max_box_diff:.3g} mask px Δ={masks}"
        )


def compare_detections(mm: dict[str, torch.Tensor], ws: dict[str, torch.Tensor]) -> DetComparison:
    n_mm, n_ws = int(mm["boxes"].shape[0]), int(ws["boxes"].shape[0])
    n = min(n_mm, n_ws)
    labels_equal = n_mm == n_ws and bool(torch.equal(mm["labels"].long(), ws["labels"].long()))
    max_score = _maxabs(mm["scores"][:n], ws["scores"][:n])
    max_box = _maxabs(mm["boxes"][:n], ws["boxes"][:n])
    result = DetComparison(n_mm, n_ws, labels_equal, max_score, max_box)
    if "masks" in mm and "masks" in ws:
        a, b = mm["masks"][:n].bool(), ws["masks"][:n].bool()
        per = (a != b).flatten(1).sum(1) if n else torch.zeros(0, dtype=torch.long)
        result.mask_pixels_diff = int(per.sum()) + _extra_pixels(mm["masks"], ws["masks"], n)
        result.mask_pixels_max = int(per.max()) if n else 0
        result.mask_pixels_total = int(mm["masks"].sum())
    return result


def _extra_pixels(a: torch.Tensor, b: torch.Tensor, n: int) -> int:
    return int(a[n:].sum()) + int(b[n:].sum())


def _maxabs(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0 or a.shape != b.shape:
        return 0.0 if a.numel() == 0 and b.numel() == 0 else float("nan")
    return float((a.double() - b.double()).abs().max())


def _tensor_diff(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.shape != b.shape:
        return f"SHAPE {tuple(a.shape)} vs {tuple(b.shape)}"
    if torch.equal(a, b):
        return "identical"
    return f"max|Δ|={_maxabs(a, b):.3g} (max|x|={float(a.abs().max()):.3g})"


@dataclass
class ImageReport:
    variant: str
    image: str
    size: tuple[int, int]
    stages: list[tuple[str, str]] = field(default_factory=list)
    rcnn_from_mm_proposals: Optional[DetComparison] = None
    final: Optional[DetComparison] = None
    seconds_mm: float = 0.0
    seconds_ws: float = 0.0

    def exact(self, box_tol: float = 1e-4, score_tol: float = 1e-4, mask_tol: int = 0) -> bool:
        f = self.final
        return (
            f is not None
            and f.same_count
            and f.labels_equal
            and f.max_box_diff <= box_tol
            and f.max_score_diff <= score_tol
            and (f.mask_pixels_diff or 0) <= mask_tol
        )


def compare_image(variant: str, image_name: str, mm_model, ws_model, *, stages: bool = True) -> ImageReport:
    """All comparisons for one variant and one image."""
    rgb = load_image(image_name)
    report = ImageReport(variant, image_name, tuple(rgb.shape[:2]))
    if stages:
        mm = run_mmdet_stages(mm_model, rgb)
        ws = run_wszoo_stages(ws_model, rgb, mm["fpn"], mm["proposals"])
        meta_mm = (tuple(mm["meta"]["img_shape"]), tuple(float(s) for s in mm["meta"]["scale_factor"]))
        meta_ws = (tuple(ws["meta"].img_shape), tuple(float(s) for s in ws["meta"].scale_factor))
        report.stages.append(("img_shape, scale", "identical" if meta_mm == meta_ws else f"{meta_mm} vs {meta_ws}"))
        report.stages.append(("input (resize+norm+pad)", _tensor_diff(mm["input"], ws["input"])))
        for i, (a, b) in enumerate(zip(mm["backbone"], ws["backbone"])):
            report.stages.append((f"backbone C{i + 2}", _tensor_diff(a, b)))
        for i, (a, b) in enumerate(zip(mm["fpn"], ws["fpn"])):
            report.stages.append((f"FPN P{i + 2}", _tensor_diff(a, b)))
        pa, pb = mm["proposals"], ws["proposals"]
        desc = _tensor_diff(pa, pb) if pa.shape == pb.shape else f"count {pa.shape[0]} vs {pb.shape[0]}"
        report.stages.append((f"RPN proposals ({pa.shape[0]})", desc))
        report.rcnn_from_mm_proposals = compare_detections(mm["dets"], ws["dets_from_mm_proposals"])
        report.stages.append(("R-CNN on mmdet proposals", report.rcnn_from_mm_proposals.row()))
    t0 = time.perf_counter()
    mm_final = run_mmdet(mm_model, rgb)
    t1 = time.perf_counter()
    ws_final = run_wszoo(ws_model, rgb)
    t2 = time.perf_counter()
    report.seconds_mm, report.seconds_ws = t1 - t0, t2 - t1
    report.final = compare_detections(mm_final, ws_final)
    return report


def prepare_variant(variant: str, seed: int = 0):
    """(MMDetection model, wszoo model) with the same deterministic random weights."""
    torch.manual_seed(seed)
    mm_model = build_mmdet(variant)
    randomize_(mm_model, seed)
    state_dict = {k: v.detach().clone() for k, v in mm_model.state_dict().items()}
    ws_model = build_wszoo(variant, state_dict)
    return mm_model, ws_model


def print_report(report: ImageReport) -> None:
    h, w = report.size
    print(
        f"\n== {report.variant} / {report.image} ({h}x{w}) "
        f"[mmdet {report.seconds_mm:.1f}s, wszoo {report.seconds_ws:.1f}s]"
    )
    for name, desc in report.stages:
        print(f"  {name:<28} {desc}")
    f = report.final
    print(f"  {'FINAL (inference_detector)':<28} {f.row()}")
    verdict = "EXACT" if report.exact(0.0, 0.0, 0) else ("PASS (<=1e-4)" if report.exact() else "DIFFERS")
    print(f"  {'verdict':<28} {verdict}")


def print_summary(reports: list[ImageReport]) -> None:
    print("\nSummary (final detections, mmdet vs wszoo)")
    header = (
        f"{'variant':<16} {'image':<10} {'dets mm/ws':>10} {'labels':>6} {'max|Δbox|':>10} {'max|Δscore|':>12} "
        f"{'mask px Δ':>16}"
    )
    print(header)
    print("-" * len(header))
    for r in reports:
        f = r.final
        masks = "-" if f.mask_pixels_diff is None else f"{f.mask_pixels_diff}/{f.mask_pixels_total}"
        print(
            f"{r.variant:<16} {r.image:<10} {f'{f.n_mm}/{f.n_ws}':>10} {'=' if f.labels_equal else 'DIFF':>6} "
            f"{f.max_box_diff:>10.3g} {f.max_score_diff:>12.3g} {masks:>16}"
        )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, or 'all' (x101 ones are slow on CPU): {', '.join(VARIANTS)}",
    )
    parser.add_argument("--images", default=",".join(DEFAULT_IMAGES), help=f"comma-separated: {', '.join(IMAGES)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-stages", action="store_true", help="compare final detections only")
    args = parser.parse_args(argv)
    variants = list(VARIANTS) if args.variants == "all" else [v.strip() for v in args.variants.split(",") if v.strip()]
    images = [i.strip() for i in args.images.split(",") if i.strip()]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)} or 'all'")
    for i in images:
        if i not in IMAGES:
            parser.error(f"unknown image {i!r}; choose from {', '.join(IMAGES)}")
    setup()
    import mmcv
    import mmdet
    import mmengine

    shim = isinstance(sys.modules.get("mmcv._ext"), _ExtShim)
    print(
        f"mmdet {mmdet.__version__}, mmcv {mmcv.__version__} "
        f"({'mmcv-lite + torchvision ops stand-in' if shim else 'compiled ops'}), mmengine {mmengine.__version__}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, seed {args.seed}"
    )
    reports = []
    for variant in variants:
        mm_model, ws_model = prepare_variant(variant, args.seed)
        for image in images:
            report = compare_image(variant, image, mm_model, ws_model, stages=not args.no_stages)
            print_report(report)
            reports.append(report)
            sys.stdout.flush()
        del mm_model, ws_model
    print_summary(reports)
    return 0 if all(r.exact() for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
