"""Opt-in training parity: MMDetection 3.3's loss terms and gradients vs wszoo's, one batch.

Needs the environment of ``mmdet_parity.py`` (mmdet 3.3, mmengine, mmcv or mmcv-lite with the
torchvision stand-in, scikit-image). Run from the repository root::

    PYTHONPATH=. /work/mmdet_venv/bin/python parity/mmdet_train_parity.py
    PYTHONPATH=. /work/mmdet_venv/bin/python parity/mmdet_train_parity.py --variants mask_r50_2x

Per variant: MMDetection's detector is built from the config shipped in the mmdet package with
its ``train_cfg``, given seeded random weights (:func:`mmdet_parity.randomize_`), and those weights
are converted with wszoo's converter into ``build_detector``'s model. Both get the same batch:
two photographs of different sizes (316x250 and 250x380, so each image's anchors meet the other
one's padding) with several objects, among them two identical boxes of different classes, two
objects whose best RPN anchor is the same anchor (the anchor overlaps the earlier one more), and
objects touching the right or bottom edge of an image, which the batch pads there (small ones in
the bottom-right corners, where mask targets read the padding). Every
candidate is sampled on both sides (MMDetection ``sampler.num = 1e9``, wszoo
``batch_size_per_image = 10**9``), so both losses are deterministic functions of the weights.

Reported: every loss term (relative difference), and the gradient of the summed loss for every
trainable parameter (relative norm difference ``|g_mm - g_ws| / |g_mm|``, with the class rows
mapped as the converter maps the weights), a named sample and the worst.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mmdet_parity  # noqa: E402

# Every candidate sampled on both sides.
ALL = 10**9
# MMDetection's loss keys -> wszoo's.
LOSS_KEYS = {
    "loss_rpn_cls": "loss_objectness",
    "loss_rpn_bbox": "loss_rpn_box_reg",
    "loss_cls": "loss_classifier",
    "loss_bbox": "loss_box_reg",
    "loss_mask": "loss_mask",
}
# A sample of gradients reported by name (MMDetection's names); every parameter is compared.
GRAD_SAMPLE = (
    "rpn_head.rpn_conv.weight",
    "rpn_head.rpn_cls.weight",
    "rpn_head.rpn_reg.weight",
    "roi_head.bbox_head.fc_cls.weight",
    "roi_head.bbox_head.fc_reg.weight",
    "roi_head.bbox_head.shared_fcs.0.weight",
    "roi_head.mask_head.conv_logits.weight",
    "roi_head.mask_head.convs.0.conv.weight",
    "neck.fpn_convs.0.conv.weight",
    "neck.lateral_convs.3.conv.weight",
    "backbone.layer4.0.downsample.0.weight",
    "backbone.layer4.2.conv2.weight",
    "backbone.layer2.0.conv1.weight",
)
LOSS_TOL = 1e-4
GRAD_TOL = 1e-3

# (image, crop rows, crop cols) -> an (H, W) photograph; objects as (x1, y1, x2, y2, COCO label
# 0..79 as MMDetection counts, mask shape).
BATCH = (
    (
        ("astronaut", (100, 416), (150, 400)),  # 316 x 250: pad_shape 320 x 256, canvas 320 x 384
        [
            (88, 48, 152, 110, 0, "ellipse"),  # the P3 anchor [88, 48, 152, 112] is the best
            (96, 56, 144, 104, 2, "ellipse"),  # anchor of both; it overlaps this one less
            (20, 150, 120, 300, 17, "ellipse"),  # two identical boxes of different classes
            (20, 150, 120, 300, 56, "diamond"),
            (170, 200, 250, 310, 5, "ellipse"),  # touches the right edge
            (240, 306, 250, 316, 9, "box"),  # small, in the bottom-right corner
        ],
    ),
    (
        ("coffee", (80, 330), (100, 480)),  # 250 x 380: pad_shape 256 x 384
        [
            (10, 10, 200, 120, 2, "ellipse"),
            (150, 100, 380, 250, 0, "ellipse"),  # touches the right and bottom edges
            (250, 20, 330, 90, 39, "diamond"),
            (370, 240, 380, 250, 41, "box"),  # small, in the bottom-right corner
        ],
    ),
)
# keep-ratio (long, short) target at which both images keep their size (short side 250).
IMAGE_SCALE = (1333, 250)


@dataclass
class TrainReport:
    variant: str
    losses: list[tuple[str, float, float, float]] = field(default_factory=list)  # name, mm, ws, rel
    grads: list[tuple[str, float, float]] = field(default_factory=list)  # name, |g_mm|, rel
    counts: dict[str, object] = field(default_factory=dict)
    seconds_mm: float = 0.0
    seconds_ws: float = 0.0

    @property
    def max_loss_diff(self) -> float:
        return max(r for *_, r in self.losses)

    @property
    def max_grad_diff(self) -> float:
        return max(r for *_, r in self.grads)

    def passed(self, loss_tol: float = LOSS_TOL, grad_tol: float = GRAD_TOL) -> bool:
        return self.max_loss_diff <= loss_tol and self.max_grad_diff <= grad_tol


# --------------------------------------------------------------------------------------------
# The batch
# --------------------------------------------------------------------------------------------


def _mask(shape: str, box, height: int, width: int) -> np.ndarray:
    x1, y1, x2, y2 = box
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    if shape == "ellipse":
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    elif shape == "diamond":
        inside = np.abs((xx - cx) / rx) + np.abs((yy - cy) / ry) <= 1
    elif shape == "box":
        inside = (xx >= x1) & (xx <= x2) & (yy >= y1) & (yy <= y2)
    else:
        raise ValueError(shape)
    return inside.astype(np.uint8)


def make_batch() -> list[dict]:
    """Two RGB uint8 (H, W, 3) photographs with boxes, labels (0..79) and (N, H, W) masks."""
    batch = []
    for (name, rows, cols), objects in BATCH:
        rgb = np.ascontiguousarray(mmdet_parity.load_image(name)[rows[0] : rows[1], cols[0] : cols[1]])
        height, width = rgb.shape[:2]
        boxes = np.array([o[:4] for o in objects], np.float32)
        labels = np.array([o[4] for o in objects], np.int64)
        masks = np.stack([_mask(o[5], o[:4], height, width) for o in objects])
        batch.append({"rgb": rgb, "boxes": boxes, "labels": labels, "masks": masks})
    return batch


def shared_best_anchors(mm_model, batch: list[dict]) -> list[tuple[int, int, int, int]]:
    """(image, anchor, earlier gt, later gt): a valid anchor that is the best of two objects and
    overlaps the earlier one more, so "the later object wins" and "the anchor's own best object"
    disagree. Computed with MMDetection's anchor generator and valid flags."""
    from mmdet.structures.bbox import bbox_overlaps

    divisor = 32
    pads = [tuple(-(-s // divisor) * divisor for s in b["rgb"].shape[:2]) for b in batch]
    canvas = (max(p[0] for p in pads), max(p[1] for p in pads))
    gen = mm_model.rpn_head.prior_generator
    sizes = [(-(-canvas[0] // s[1]), -(-canvas[1] // s[0])) for s in gen.strides[:4]]
    sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))  # P6: stride-2 max-pool of P5
    anchors = torch.cat(gen.grid_priors(sizes, device="cpu"))
    found = []
    for index, (item, pad) in enumerate(zip(batch, pads)):
        valid = torch.cat(gen.valid_flags(sizes, pad, device="cpu"))
        iou = bbox_overlaps(torch.from_numpy(item["boxes"]), anchors[valid])
        best = iou.max(dim=1).values
        index_map = torch.where(valid)[0]
        for j in range(iou.shape[0]):
            for i in range(j):
                shared = (iou[i] == best[i]) & (iou[j] == best[j]) & (iou[i] > iou[j]) & (best[j] >= 0.3)
                found.extend((index, int(index_map[k]), i, j) for k in torch.where(shared)[0].tolist())
    return found


# --------------------------------------------------------------------------------------------
# The two models
# --------------------------------------------------------------------------------------------


def build_mmdet_train(variant: str, seed: int):
    """MMDetection's detector with its train_cfg (every candidate sampled), seeded weights, train mode."""
    from mmdet.registry import MODELS
    from mmengine.config import Config

    cfg = Config.fromfile(mmdet_parity.config_path(variant))
    cfg.model.backbone.init_cfg = None
    cfg.model.train_cfg.rpn.sampler.num = ALL
    cfg.model.train_cfg.rcnn.sampler.num = ALL
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    mmdet_parity.randomize_(model, seed)
    return model.train()  # frozen_stages=1: stem and layer1 get no gradient


def build_wszoo_train(variant: str, mm_model):
    """wszoo's detector with the converted weights, every candidate sampled, train mode."""
    from wszoo.arch import DetectorArch
    from wszoo.conversion import DETECTOR_RULES, convert_state_dict
    from wszoo.modeling.detector import build_detector

    _, depth, groups, base_width, with_mask = mmdet_parity.VARIANTS[variant]
    arch = DetectorArch(depth=depth, groups=groups, base_width=base_width, with_mask=with_mask)
    model = build_detector(arch=arch, num_classes=81, image_scale=IMAGE_SCALE, resize_backend="cv2")
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    source = {k: v.detach().clone() for k, v in mm_model.state_dict().items()}
    native, report = convert_state_dict(source, rules=DETECTOR_RULES, target_shapes=shapes)
    model.load_state_dict(native, strict=True)
    model.rpn.fg_bg_sampler.batch_size_per_image = ALL
    model.roi_heads.fg_bg_sampler.batch_size_per_image = ALL
    return model.train(), report


def run_mmdet(model, batch: list[dict], counts: dict) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """MMDetection's loss terms (RPN levels summed) and the gradients of their sum."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    with_mask = "mask_head" in model.roi_head.__dict__.get("_modules", {})
    inputs, samples = [], []
    for item in batch:
        height, width = item["rgb"].shape[:2]
        inputs.append(torch.from_numpy(np.ascontiguousarray(item["rgb"][..., ::-1])).permute(2, 0, 1).contiguous())
        sample = DetDataSample(
            metainfo=dict(ori_shape=(height, width), img_shape=(height, width), scale_factor=(1.0, 1.0))
        )
        gt = InstanceData(bboxes=torch.from_numpy(item["boxes"]), labels=torch.from_numpy(item["labels"]))
        if with_mask:
            gt.masks = BitmapMasks(item["masks"], height, width)
        sample.gt_instances = gt
        samples.append(sample)
    rpn_targets = model.rpn_head.get_targets

    def get_targets(anchor_list, valid_flag_list, *args, **kwargs):
        counts["valid anchors"] = [int(torch.cat(v).sum()) for v in valid_flag_list]
        out = rpn_targets(anchor_list, valid_flag_list, *args, **kwargs)
        counts["rpn avg_factor"] = out[4]
        return out

    model.rpn_head.get_targets = get_targets
    try:
        model.zero_grad(set_to_none=True)
        data = model.data_preprocessor({"inputs": inputs, "data_samples": samples}, training=True)
        losses = model.loss(data["inputs"], data["data_samples"])
        total, _ = model.parse_losses(losses)
        total.backward()
    finally:
        del model.rpn_head.get_targets
    values = {}
    for key, value in losses.items():
        if "loss" in key:
            value = sum(v.sum() for v in value) if isinstance(value, (list, tuple)) else value.sum()
            values[key] = float(value.detach())
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return values, grads


def run_wszoo(model, batch: list[dict]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    images, targets = [], []
    for item in batch:
        images.append(torch.from_numpy(item["rgb"]).permute(2, 0, 1).contiguous())
        target = {"boxes": torch.from_numpy(item["boxes"]), "labels": torch.from_numpy(item["labels"]) + 1}
        if model.roi_heads.has_mask():
            target["masks"] = torch.from_numpy(item["masks"])
        targets.append(target)
    model.zero_grad(set_to_none=True)
    losses = model(images, targets)
    sum(losses.values()).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in losses.items()}, grads


def _mm_grad_in_wszoo_layout(mapping, grad: torch.Tensor) -> torch.Tensor:
    from wszoo.conversion.convert import ROW_OPS

    for pattern, op in ROW_OPS:
        if re.fullmatch(pattern, mapping.target):
            return op(grad)
    return grad


def compare_training(variant: str, seed: int = 0, batch: Optional[list[dict]] = None) -> TrainReport:
    """Both models, the same batch: loss terms and gradients."""
    batch = batch if batch is not None else make_batch()
    mm_model = build_mmdet_train(variant, seed)
    ws_model, conversion = build_wszoo_train(variant, mm_model)
    report = TrainReport(variant)
    report.counts["image sizes"] = [tuple(b["rgb"].shape[:2]) for b in batch]
    report.counts["shared best anchors (image, anchor, gt, later gt)"] = shared_best_anchors(mm_model, batch)
    t0 = time.perf_counter()
    mm_losses, mm_grads = run_mmdet(mm_model, batch, report.counts)
    t1 = time.perf_counter()
    ws_losses, ws_grads = run_wszoo(ws_model, batch)
    report.seconds_mm, report.seconds_ws = t1 - t0, time.perf_counter() - t1
    for mm_key, ws_key in LOSS_KEYS.items():
        if mm_key not in mm_losses:
            continue
        a, b = mm_losses[mm_key], ws_losses[ws_key]
        report.losses.append((mm_key, a, b, abs(a - b) / max(abs(a), 1e-12)))
    a, b = sum(mm_losses.values()), sum(ws_losses.values())
    report.losses.append(("total", a, b, abs(a - b) / max(abs(a), 1e-12)))
    by_source = {m.source: m for m in conversion.mappings}
    for name, grad in mm_grads.items():
        mapping = by_source[name]
        ws_grad = ws_grads.get(mapping.target)
        if ws_grad is None:
            raise AssertionError(f"{name} -> {mapping.target}: MMDetection has a gradient, wszoo none")
        expected = _mm_grad_in_wszoo_layout(mapping, grad)
        norm = float(expected.double().norm())
        diff = float((expected.double() - ws_grad.double()).norm())
        report.grads.append((name, norm, diff / norm if norm > 0 else diff))
    extra = set(ws_grads) - {by_source[n].target for n in mm_grads}
    if extra:
        raise AssertionError(f"wszoo has gradients MMDetection lacks: {sorted(extra)[:5]}")
    return report


def print_report(report: TrainReport) -> None:
    print(f"\n== {report.variant} [mmdet {report.seconds_mm:.1f}s, wszoo {report.seconds_ws:.1f}s]")
    for key, value in report.counts.items():
        print(f"  {key}: {value}")
    print(f"  {'loss term':<16} {'mmdet':>14} {'wszoo':>14} {'rel. diff':>10}")
    for name, a, b, rel in report.losses:
        print(f"  {name:<16} {a:>14.8f} {b:>14.8f} {rel:>10.2e}")
    sample = [g for g in report.grads if g[0] in GRAD_SAMPLE]
    worst = max(report.grads, key=lambda g: g[2])
    print(f"  {'gradient':<42} {'|g| mmdet':>11} {'rel. diff':>10}")
    for name, norm, rel in sample:
        print(f"  {name:<42} {norm:>11.4e} {rel:>10.2e}")
    print(f"  worst of {len(report.grads)} parameters: {worst[0]} ({worst[1]:.3e}) {worst[2]:.2e}")
    verdict = "PASS" if report.passed() else "DIFFERS"
    print(f"  verdict: {verdict} (loss terms <= {LOSS_TOL:g}, gradients <= {GRAD_TOL:g} relative)")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="faster_r50_1x,mask_r50_2x", help="comma-separated variant names")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in mmdet_parity.VARIANTS:
            parser.error(f"unknown variant {v!r}; choose from {', '.join(mmdet_parity.VARIANTS)}")
    mmdet_parity.setup()
    import mmdet

    print(f"mmdet {mmdet.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}, seed {args.seed}")
    reports = []
    for variant in variants:
        report = compare_training(variant, args.seed)
        print_report(report)
        reports.append(report)
        sys.stdout.flush()
    return 0 if all(r.passed() for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
