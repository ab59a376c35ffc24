"""A small COCO-format dataset of coloured shapes with masks, generated for the tests.

Each image has a dark noisy background and one or two non-overlapping shapes: a red square
(category 1), a green disk (category 3, stored as RLE) or a blue triangle (category 7); the
category ids are deliberately not contiguous. Options add an image without annotations and a
crowd annotation, the cases MMDetection's dataset treats specially.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CATEGORIES = [{"id": 1, "name": "square"}, {"id": 3, "name": "disk"}, {"id": 7, "name": "triangle"}]
COLOURS = {1: (220, 40, 40), 3: (40, 220, 40), 7: (40, 80, 230)}


def _shape_mask(category: int, height: int, width: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    x0, y0, x1, y1 = box
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    if category == 1:
        return (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    if category == 3:
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    # triangle with apex at the top centre
    t = (ys - y0) / (y1 - y0)
    half = t * (x1 - x0) / 2
    cx = (x0 + x1) / 2
    return (ys >= y0) & (ys < y1) & (xs >= cx - half) & (xs < cx + half)


def _segmentation(category: int, mask: torch.Tensor, box) -> object:
    import numpy as np
    from pycocotools import mask as mask_utils

    x0, y0, x1, y1 = box
    if category == 1:
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]
    if category == 7:
        return [[(x0 + x1) / 2, y0, x1, y1, x0, y1]]
    rle = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def make_dataset(
    root: Path,
    *,
    num_images: int = 8,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
    with_empty: bool = False,
    with_crowd: bool = False,
) -> tuple[Path, Path]:
    """Writes PNGs under ``root/images`` and ``root/instances.json``; returns both paths."""
    from torchvision.io import write_png

    generator = torch.Generator().manual_seed(seed)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        height, width = size if index % 3 else (size[0], size[1] + 16)  # two aspect groups
        image = (torch.rand(3, height, width, generator=generator) * 40).to(torch.uint8)
        record = {"id": 100 + index, "file_name": f"{index:04d}.png", "height": height, "width": width}
        images.append(record)
        empty = with_empty and index == num_images - 1
        count = 0 if empty else 1 + int(torch.randint(2, (1,), generator=generator))
        slots = (
            [(2, 2), (width // 2, height // 2)]
            if count == 2
            else [
                (
                    int(torch.randint(0, width - 40, (1,), generator=generator)),
                    int(torch.randint(0, height - 40, (1,), generator=generator)),
                )
            ]
        )
        for x, y in slots[:count]:
            category = CATEGORIES[int(torch.randint(3, (1,), generator=generator))]["id"]
            side = (
                int(torch.randint(20, 29, (1,), generator=generator))
                if count == 2
                else int(torch.randint(24, 39, (1,), generator=generator))
            )
            box = (x, y, min(x + side, width), min(y + side, height))
            mask = _shape_mask(category, height, width, box)
            image[:, mask] = torch.tensor(COLOURS[category], dtype=torch.uint8)[:, None]
            ys, xs = torch.where(mask)
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": record["id"],
                    "category_id": category,
                    "bbox": bbox,
                    "area": float(mask.sum()),
                    "iscrowd": 0,
                    "segmentation": _segmentation(category, mask, box),
                }
            )
        write_png(image, str(image_dir / record["file_name"]))
    if with_crowd:
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": images[0]["id"],
                "category_id": 1,
                "bbox": [40.0, 40.0, 10.0, 10.0],
                "area": 100.0,
                "iscrowd": 1,
                "segmentation": {"size": [images[0]["height"], images[0]["width"]], "counts": _crowd_counts(images[0])},
            }
        )
    ann_file = root / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return image_dir, ann_file


def _crowd_counts(image: dict) -> list[int]:
    # Uncompressed RLE (column-major) of a 10x10 block at (40, 40).
    height, width = image["height"], image["width"]
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[40:50, 40:50] = True
    flat = mask.t().reshape(-1).tolist()
    counts, current, run = [], False, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return counts


def ground_truth_results(ann_file: Path) -> list[dict]:
    """The non-crowd annotations as COCO results with score 1 (a perfect detector)."""
    data = json.loads(Path(ann_file).read_text())
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
            "segmentation": a["segmentation"],
        }
        for a in data["annotations"]
        if not a["iscrowd"]
    ]


# Build options that keep a depth-18 detector fast on a CPU: no upscaling of the 64-80 px
# images, 16 sampled RoIs per image in training, 20 proposals per image at test time.
SMALL_BUILD = dict(
    image_scale=(80, 64), box_batch_size_per_image=16, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=20
)
