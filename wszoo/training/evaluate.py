"""COCO evaluation: detections to a COCO results JSON, and the 12 box / mask AP numbers.

Results use the dataset's own category ids (label ``i`` -> ``dataset.category_ids[i - 1]``),
boxes as ``[x, y, w, h]`` in input pixels and masks as RLE of ``probability >= 0.5``
(MMDetection's ``mask_thr_binary``). Metrics come from pycocotools' ``COCOeval``, exactly the
numbers MMDetection's ``CocoMetric`` prints. Under torchrun every rank runs its shard and rank
0 gathers the results, writes the JSON and evaluates.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..settings import DEFAULT_SETTINGS
from . import distributed as dist_utils
from .data import ShardSampler, collate

__all__ = ["STAT_NAMES", "to_coco_results", "coco_metrics", "format_metrics", "predict", "evaluate"]

# The order of COCOeval.stats.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# What each number averages over, as COCOeval.summarize() prints it: IoU, area, max detections.
_STAT_SCOPE = {
    "AP": ("0.50:0.95", "all", 100),
    "AP50": ("0.50", "all", 100),
    "AP75": ("0.75", "all", 100),
    "APs": ("0.50:0.95", "small", 100),
    "APm": ("0.50:0.95", "medium", 100),
    "APl": ("0.50:0.95", "large", 100),
    "AR1": ("0.50:0.95", "all", 1),
    "AR10": ("0.50:0.95", "all", 10),
    "AR100": ("0.50:0.95", "all", 100),
    "ARs": ("0.50:0.95", "small", 100),
    "ARm": ("0.50:0.95", "medium", 100),
    "ARl": ("0.50:0.95", "large", 100),
}


def to_coco_results(
    output: dict[str, Tensor],
    *,
    image_id: int,
    category_ids: Sequence[int],
    mask_threshold: float = DEFAULT_SETTINGS.mask_thresh,
) -> list[dict[str, Any]]:
    """One image's detections (a model output dict) as COCO result records.

    Args:
        output: ``boxes`` (x1, y1, x2, y2), ``labels`` (1..K), ``scores`` and optionally
            ``masks`` (N, 1, H, W) probabilities or (N, H, W) binary masks.
        image_id: The COCO image id.
        category_ids: Category id of label ``i`` at position ``i - 1``.
        mask_threshold: Probabilities ``>=`` this are foreground.
    """
    boxes = output["boxes"].detach().float().cpu()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    scores = output["scores"].detach().float().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    records = [
        {
            "image_id": int(image_id),
            "category_id": int(category_ids[label - 1]),
            "bbox": [round(v, 3) for v in box],
            "score": round(float(score), 5),
        }
        for box, score, label in zip(xywh, scores, labels)
    ]
    if "masks" in output:
        for record, rle in zip(records, _encode_masks(output["masks"], mask_threshold)):
            record["segmentation"] = rle
    return records


def _encode_masks(masks: Tensor, threshold: float) -> list[dict]:
    from pycocotools import mask as mask_utils

    if masks.dim() == 4:
        masks = masks[:, 0]
    binary = (masks >= threshold) if masks.is_floating_point() else masks.bool()
    array = np.asfortranarray(binary.cpu().numpy().astype(np.uint8).transpose(1, 2, 0))
    rles = mask_utils.encode(array) if array.shape[2] else []
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return list(rles)


def coco_metrics(
    coco_gt, results: list[dict[str, Any]], *, iou_types: Sequence[str] = ("bbox",), quiet: bool = True
) -> dict[str, dict[str, float]]:
    """COCOeval's 12 numbers per IoU type (``"bbox"``, ``"segm"``), as fractions (0..1).

    Args:
        coco_gt: A ``pycocotools.coco.COCO`` of the ground truth, or the path of its JSON.
        results: COCO result records (see :func:`to_coco_results`).
        iou_types: What to evaluate.
        quiet: Suppress COCOeval's printed table.
    """

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not isinstance(coco_gt, COCO):
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(str(coco_gt))
    metrics = {}
    for iou_type in iou_types:
        selected = [r for r in results if iou_type != "segm" or "segmentation" in r]
        if not selected:  # loadRes refuses an empty list; nothing detected is AP 0
            metrics[iou_type] = dict.fromkeys(STAT_NAMES, 0.0)
            continue
        sink = io.StringIO() if quiet else None
        with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
            coco_dt = coco_gt.loadRes(_copy_for_loadres(selected, iou_type))
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        metrics[iou_type] = {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}
    return metrics


def format_metrics(metrics: dict[str, dict[str, float]]) -> str:
    """The 12 COCO numbers of each IoU type as a text table (fractions, 3 decimals, as COCOeval;
    -1 where the dataset has no object of that size)."""
    types = list(metrics)
    lines = [f"{'metric':<7} {'IoU':>9} {'area':>6} {'maxDets':>7}" + "".join(f" {t:>7}" for t in types)]
    for name in STAT_NAMES:
        iou, area, dets = _STAT_SCOPE[name]
        values = "".join(f" {metrics[t].get(name, float('nan')):>7.3f}" for t in types)
        lines.append(f"{name:<7} {iou:>9} {area:>6} {dets:>7}" + values)
    return "\n".join(lines)


def _copy_for_loadres(results: list[dict], iou_type: str) -> list[dict]:
    # loadRes writes into the records (area, id, bbox of segm results); keep the caller's intact.
    # For box evaluation the masks are dropped, or loadRes would take areas from them.
    return [{k: v for k, v in r.items() if iou_type == "segm" or k != "segmentation"} for r in results]


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset,
    *,
    batch_size: int = 1,
    device: Union[str, torch.device] = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    autocast_dtype: Optional[torch.dtype] = None,
) -> list[dict[str, Any]]:
    """COCO results of ``model`` on this rank's shard of ``dataset`` (every image when alone).

    Args:
        model: A wszoo detector (its eval mode is used).
        dataset: A :class:`wszoo.training.data.CocoDataset` (``train=False``).
        batch_size: Images per forward pass.
        device: Where the model runs.
        num_workers: DataLoader workers.
        progress: Show a tqdm bar on rank 0.
        autocast_dtype: Run under ``torch.autocast`` with this dtype (GPU), or None.
    """

    rank, world = dist_utils.rank(), dist_utils.world_size()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), rank=rank, world_size=world),
        num_workers=num_workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(0),  # leave the global RNG (training's) untouched
    )
    was_training = model.training
    model.eval()
    device = torch.device(device)
    results: list[dict[str, Any]] = []
    for images, targets in tqdm(loader, desc="eval", disable=not progress or rank != 0, dynamic_ncols=True):
        images = [image.to(device, non_blocking=True) for image in images]
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outputs = model(images)
        for output, target in zip(outputs, targets):
            results += to_coco_results(output, image_id=target["image_id"], category_ids=dataset.category_ids)
    model.train(was_training)
    return results


def evaluate(
    model: nn.Module,
    dataset,
    *,
    results_file: Optional[Union[str, Path]] = None,
    batch_size: int = 1,
    device: Union[str, torch.device] = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    autocast_dtype: Optional[torch.dtype] = None,
) -> dict[str, dict[str, float]]:
    """Box (and, for Mask R-CNN, mask) AP of ``model`` on a COCO-format ``dataset``.

    Under torchrun every rank must call it; rank 0 writes ``results_file`` and returns the
    metrics, which are broadcast so every rank returns the same dict.

    Returns:
        ``{"bbox": {"AP": ..., "AP50": ..., ...}[, "segm": {...}]}``, fractions in 0..1.
    """
    unwrapped = getattr(model, "module", model)
    results = predict(
        unwrapped,
        dataset,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        progress=progress,
        autocast_dtype=autocast_dtype,
    )
    results = dist_utils.gather_lists(results)
    metrics = None
    if dist_utils.is_main():
        results.sort(key=lambda r: (r["image_id"], -r["score"]))
        if results_file is not None:
            Path(results_file).parent.mkdir(parents=True, exist_ok=True)
            Path(results_file).write_text(json.dumps(results))
        with_masks = bool(getattr(unwrapped.roi_heads, "has_mask", lambda: False)())
        metrics = coco_metrics(dataset.coco, results, iou_types=("bbox", "segm") if with_masks else ("bbox",))
    return dist_utils.broadcast_object(metrics)
