"""Predict and draw: run a detector on image files and write a PNG and a JSON per image.

Only images of the same size share a batch. GroupNorm normalises over whole feature maps,
padding included, so an image padded to the size of a larger batch-mate would get different
detections than alone; with equal sizes the padding is the image's own, and the detections are
those of the image alone up to float rounding (batched convolutions may sum in another order).
Pass ``batch_size=1`` for results bit-identical to calling the model on each image.
"""

from __future__ import annotations

import colorsys
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence, Union

import torch
from torch import Tensor, nn
from torchvision.io import encode_png
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks
from tqdm.auto import tqdm

from ..checkpoint_io import write_file_atomic
from ..image_io import ImageError, decode_image_file
from ..modeling.transforms import binary_masks
from ..settings import DEFAULT_SETTINGS

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageError",
    "PredictReport",
    "find_images",
    "read_image",
    "mask_to_rle",
    "detections_record",
    "draw_detections",
    "predict",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_THRESHOLD = DEFAULT_SETTINGS.mask_thresh  # MMDetection's binary mask is probability >= 0.5


@dataclass
class PredictReport:
    """What :func:`predict` did.

    Attributes:
        written: ``(image, drawn PNG, detections JSON)`` per image processed.
        failed: ``(file, reason)`` per file that could not be processed.
    """

    written: list[tuple[Path, Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def find_images(inputs: Iterable[Union[str, os.PathLike]]) -> list[Path]:
    """Files to predict on: files as given, and the JPEG and PNG files of folders (sorted, not recursive).

    Raises:
        FileNotFoundError: An input does not exist.
    """
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found.extend(sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif item.is_file():
            found.append(item)
        else:
            raise FileNotFoundError(f"{item} is neither a file nor a folder")
    return found


def read_image(path: Union[str, os.PathLike]) -> Tensor:
    """A JPEG or PNG file as a (3, H, W) uint8 RGB tensor; grayscale and RGBA are converted.

    The file is decoded by Pillow first, so a damaged one raises instead of crashing the process
    (see :mod:`wszoo.image_io`).

    Raises:
        ImageError: The file is not a readable JPEG or PNG; the message names it.
    """
    return decode_image_file(path)


def mask_to_rle(mask: Tensor) -> dict:
    """COCO's uncompressed RLE of a binary (H, W) mask: column-major run lengths, starting with 0s.

    ``pycocotools.mask.frPyObjects(rle, h, w)`` reads it.
    """
    height, width = mask.shape
    flat = mask.t().reshape(-1).to(torch.uint8)
    changes = torch.nonzero(flat[1:] != flat[:-1]).flatten() + 1
    bounds = torch.cat([torch.tensor([0]), changes, torch.tensor([flat.numel()])])
    counts = (bounds[1:] - bounds[:-1]).tolist()
    if flat.numel() and flat[0]:
        counts = [0] + counts
    return {"size": [height, width], "counts": counts}


def detections_record(
    detections: dict[str, Tensor], *, classes: Sequence[str], image: Union[str, Path], size: tuple[int, int]
) -> dict:
    """The JSON object of one image's detections (boxes in input pixels, x1 y1 x2 y2)."""
    items = []
    masks = binary_masks(detections["masks"], MASK_THRESHOLD) if "masks" in detections else None
    for index, (box, label, score) in enumerate(
        zip(detections["boxes"].tolist(), detections["labels"].tolist(), detections["scores"].tolist())
    ):
        item = {
            "label": label,
            "class": classes[label - 1] if 0 < label <= len(classes) else str(label),
            "score": score,
            "box": box,
        }
        if masks is not None:
            item["mask"] = mask_to_rle(masks[index])
        items.append(item)
    return {"image": str(image), "height": size[0], "width": size[1], "detections": items}


def _palette(labels: Tensor) -> list[tuple[int, int, int]]:
    # A fixed, well-spread colour per class (golden-ratio hues), the same in every image.

    return [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 0.95))
        for label in labels.tolist()
    ]


def draw_detections(image: Tensor, detections: dict[str, Tensor], *, classes: Sequence[str]) -> Tensor:
    """``image`` (uint8 (3, H, W)) with mask overlays, boxes, class names and scores drawn."""

    if len(detections["boxes"]) == 0:
        return image
    colors = _palette(detections["labels"])
    if "masks" in detections:
        masks = binary_masks(detections["masks"], MASK_THRESHOLD)
        image = draw_segmentation_masks(image, masks, alpha=0.45, colors=colors)
    names = [classes[i - 1] if 0 < i <= len(classes) else str(i) for i in detections["labels"].tolist()]
    captions = [f"{name} {score:.2f}" for name, score in zip(names, detections["scores"].tolist())]
    return draw_bounding_boxes(image, detections["boxes"], labels=captions, colors=colors, width=2)


def _keep(detections: dict[str, Tensor], score_threshold: float) -> dict[str, Tensor]:
    keep = detections["scores"] > score_threshold  # MMDetection's show_result keeps scores > score_thr
    return {k: v[keep].cpu() for k, v in detections.items()}


def _batches(images: dict[Path, Tensor], batch_size: int) -> list[list[Path]]:
    by_size: dict[tuple[int, int], list[Path]] = defaultdict(list)
    for path, image in images.items():
        by_size[tuple(image.shape[-2:])].append(path)
    return [paths[i : i + batch_size] for paths in by_size.values() for i in range(0, len(paths), batch_size)]


def _output_stems(paths: Sequence[Path]) -> dict[Path, str]:
    stems: dict[Path, str] = {}
    used: set[str] = set()
    for path in paths:
        stem, n = path.stem, 1
        while stem in used:  # same file name in two folders: a.png, a-1.png
            stem, n = f"{path.stem}-{n}", n + 1
        used.add(stem)
        stems[path] = stem
    return stems


def predict(
    model: nn.Module,
    inputs: Iterable[Union[str, os.PathLike]],
    *,
    out_dir: Union[str, os.PathLike],
    classes: Sequence[str],
    score_threshold: float = 0.3,
    batch_size: int = 4,
    device: Union[str, torch.device, None] = None,
    progress: bool = True,
    chunk_size: int = 64,
) -> PredictReport:
    """Runs ``model`` on image files and folders; writes ``<stem>.png`` (drawn) and ``<stem>.json`` per image.

    Files that cannot be read are reported in the result (and skipped); the others are processed.

    Args:
        model: A wszoo detector (moved to ``device`` and put in eval mode).
        inputs: Image files and folders (their ``.jpg``, ``.jpeg`` and ``.png`` files).
        out_dir: Output folder (created).
        classes: Class names of labels 1..N.
        score_threshold: Detections with scores above it are drawn and saved.
        batch_size: Images per forward pass (only images of equal size share one).
        device: Where to run (default: the model's device).
        progress: Show a progress bar.
        chunk_size: Images read into memory at a time.
    """

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not 0.0 <= score_threshold <= 1.0:  # also refuses NaN
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = find_images(inputs)
    stems = _output_stems(paths)
    model = model.eval() if device is None else model.to(device).eval()
    device = next(model.parameters()).device
    report = PredictReport()
    with tqdm(total=len(paths), unit="img", disable=not progress) as bar, torch.inference_mode():
        for start in range(0, len(paths), chunk_size):
            images: dict[Path, Tensor] = {}
            for path in paths[start : start + chunk_size]:
                try:
                    images[path] = read_image(path)
                except ImageError as err:
                    report.failed.append((path, str(err)))
                    bar.update(1)
            for batch in _batches(images, batch_size):
                outputs = model([images[p].to(device) for p in batch])
                for path, detections in zip(batch, outputs):
                    detections = _keep(detections, score_threshold)
                    png, record = out / f"{stems[path]}.png", out / f"{stems[path]}.json"
                    drawn = draw_detections(images[path], detections, classes=classes)
                    write_file_atomic(png, encode_png(drawn).numpy().tobytes())  # whole files or none
                    size = tuple(images[path].shape[-2:])
                    found = detections_record(detections, classes=classes, image=path, size=size)
                    write_file_atomic(record, (json.dumps(found) + "\n").encode())
                    report.written.append((path, png, record))
                    bar.update(1)
    order = {path: index for index, path in enumerate(paths)}
    report.written.sort(key=lambda item: order[item[0]])
    return report
