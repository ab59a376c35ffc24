"""Predict and draw on image files: a PNG drawing and a JSON of detections per image.

:func:`write_predictions` runs a :class:`~wszoo.inference.predictor.Predictor` over files and
folders (``wszoo predict`` is a thin command line over it); :func:`predict` is the older form that
takes a built model. Batching follows the Predictor's rule: only images of equal size share a
batch (GroupNorm sees the padding).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torchvision.io import encode_png
from tqdm.auto import tqdm

from ..checkpoint_io import write_file_atomic
from ..image_io import ImageError, decode_image_file
from ..modeling.transforms import binary_masks
from ..settings import DEFAULT_SETTINGS
from .drawing import DRAW_THRESHOLD, draw_detections
from .predictor import Predictor

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
    "write_predictions",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_THRESHOLD = DEFAULT_SETTINGS.mask_thresh  # MMDetection's binary mask is probability >= 0.5


@dataclass
class PredictReport:
    """What :func:`write_predictions` did.

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


def write_predictions(
    predictor: Predictor,
    inputs: Iterable[Union[str, os.PathLike]],
    *,
    out_dir: Union[str, os.PathLike],
    draw_threshold: Optional[float] = DRAW_THRESHOLD,
    boxes: bool = True,
    masks: bool = True,
    scores: bool = True,
    progress: bool = True,
    chunk_size: int = 64,
) -> PredictReport:
    """Runs ``predictor`` on image files and folders; writes ``<stem>.png`` (drawn) and ``<stem>.json``.

    The JSON holds every detection the predictor returns (those above its ``score_threshold``);
    the drawing shows those above ``draw_threshold``. Files that cannot be read are reported in
    the result (and skipped); the others are processed.

    Args:
        predictor: What to run.
        inputs: Image files and folders (their ``.jpg``, ``.jpeg`` and ``.png`` files).
        out_dir: Output folder (created).
        draw_threshold: Draw detections scoring above this (None: all in the JSON).
        boxes: Draw boxes and labels.
        masks: Draw masks.
        scores: Put scores in the labels.
        progress: Show a progress bar.
        chunk_size: Images read into memory at a time.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = find_images(inputs)
    stems = _output_stems(paths)
    report = PredictReport()
    draw_options = dict(classes=predictor.classes, threshold=draw_threshold, boxes=boxes, masks=masks, scores=scores)
    with tqdm(total=len(paths), unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), chunk_size):
            images: dict[Path, Tensor] = {}
            for path in paths[start : start + chunk_size]:
                try:
                    images[path] = read_image(path)
                except ImageError as err:
                    report.failed.append((path, str(err)))
                    bar.update(1)
            found = predictor.detect(list(images.values()))
            for (path, image), detections in zip(images.items(), found):
                png, record = out / f"{stems[path]}.png", out / f"{stems[path]}.json"
                drawn = draw_detections(image, detections, **draw_options)
                write_file_atomic(png, encode_png(drawn).numpy().tobytes())  # whole files or none
                data = detections_record(
                    detections, classes=predictor.classes, image=path, size=tuple(image.shape[-2:])
                )
                write_file_atomic(record, (json.dumps(data) + "\n").encode())
                report.written.append((path, png, record))
                bar.update(1)
    return report


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
    """Runs a built ``model`` on image files and folders: :func:`write_predictions` over a
    :class:`~wszoo.inference.predictor.Predictor`, with detections scoring above
    ``score_threshold`` both saved and drawn.

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
    predictor = Predictor(model, classes=classes, device=device, score_threshold=score_threshold, batch_size=batch_size)
    return write_predictions(
        predictor, inputs, out_dir=out_dir, draw_threshold=None, progress=progress, chunk_size=chunk_size
    )
