"""COCO-format datasets and the training sampler of MMDetection v2's GN+WS configs.

A dataset is an image folder and an instances JSON. Images are checked by Pillow, then decoded
with ``torchvision.io.decode_image`` (:func:`wszoo.image_io.decode_image_file`: a damaged image
raises :class:`wszoo.image_io.ImageError` naming its path, never crashes the process), and
annotations go through torchvision's ``CocoDetection`` and
``wrap_dataset_for_transforms_v2`` (boxes as ``tv_tensors.BoundingBoxes``, polygons and RLEs
decoded to ``tv_tensors.Mask``), so transforms v2 apply to image, boxes and masks together.

What MMDetection v2's ``CocoDataset`` does, and this module does too
(https://github.com/open-mmlab/mmdetection/blob/v2.28.2/mmdet/datasets/coco.py#L96-L160):

* labels are contiguous in the order of the sorted category ids (label ``i`` is category
  ``category_ids[i - 1]``; 0 is background, as in torchvision);
* crowd annotations (``iscrowd=1``) are not training targets (MMDetection keeps them as
  ``gt_bboxes_ignore``, which these configs' assigners do not use); boxes with width or height
  below 1 pixel or zero area are dropped;
* for training, images without any annotation of the selected classes are skipped
  (``filter_empty_gt=True``), as are images with a side under 32 pixels; an image whose only
  annotations are crowd ones stays, with no targets;
* evaluation uses every image.

Resizing, normalisation and padding happen inside the model (:class:`wszoo.modeling.transforms.
DetectionTransform`). The training pipeline adds the horizontal flip with probability 0.5;
flipping before the keep-ratio resize equals flipping after it, as MMDetection does.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
from torchvision.transforms.v2 import functional as TF

from ..image_io import ImageError, decode_image_file

__all__ = ["CocoDataset", "GroupedBatchSampler", "collate", "ShardSampler"]

PathLike = Union[str, Path]


def _coco_detection_class():
    class _TensorCocoDetection(CocoDetection):
        """``CocoDetection`` that decodes images to uint8 RGB tensors instead of PIL images."""

        def _load_image(self, id: int) -> Tensor:  # noqa: A002 - torchvision's signature
            path = Path(self.root) / self.coco.loadImgs(id)[0]["file_name"]
            # Checked by Pillow first: a damaged file raises ImageError naming it, never crashes
            # the worker. EXIF orientation as OpenCV's IMREAD_COLOR in MMDetection; 16-bit to uint8.
            try:
                return decode_image_file(path)
            except ImageError as err:
                raise ImageError(
                    f"{err}; image id {id} of the dataset: replace the file or remove the image from {self._ann_file}"
                ) from None

    return _TensorCocoDetection


class CocoDataset(Dataset):
    """A COCO-format detection / instance-segmentation dataset.

    Items are ``(image, target)``: ``image`` a (3, H, W) uint8 RGB tensor and ``target`` a dict
    with ``boxes`` (N, 4) float32 x1, y1, x2, y2 in pixels, ``labels`` (N,) int64 in 1..K,
    ``image_id`` and, with ``with_masks``, ``masks`` (N, H, W) uint8. Training items can also
    be fetched as ``dataset[(index, flip)]`` to decide the flip outside (see
    :class:`GroupedBatchSampler`).

    Args:
        image_dir: Folder holding the images (``file_name`` of the JSON is relative to it).
        ann_file: The instances JSON.
        train: Skip images without annotations (MMDetection's ``filter_empty_gt``).
        with_masks: Decode instance masks.
        classes: Keep only these category names, labelled 1..K in this order; default: every
            category, in the order of their ids.
    """

    def __init__(
        self,
        image_dir: PathLike,
        ann_file: PathLike,
        *,
        train: bool = False,
        with_masks: bool = False,
        classes: Optional[Sequence[str]] = None,
    ) -> None:

        image_dir, ann_file = Path(image_dir), Path(ann_file)
        if not image_dir.is_dir():
            raise FileNotFoundError(f"image folder {image_dir} does not exist")
        if not ann_file.is_file():
            raise FileNotFoundError(f"annotation file {ann_file} does not exist")
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            base = _coco_detection_class()(str(image_dir), str(ann_file))
        base._ann_file = ann_file  # named when an image is damaged
        keys = {"image_id", "boxes", "labels", "iscrowd"} | ({"masks"} if with_masks else set())
        self._wrapped = wrap_dataset_for_transforms_v2(base, target_keys=keys)
        self.coco = base.coco
        self.with_masks = with_masks
        self.train = train
        self.category_ids, self.classes = _select_categories(self.coco, classes)
        self._label_of = {cat: label for label, cat in enumerate(self.category_ids, start=1)}
        positions = range(len(base.ids))
        if train:
            positions = [i for i in positions if self._trainable(base.ids[i])]
        self._positions = list(positions)
        self.image_ids = [base.ids[i] for i in self._positions]

    def __len__(self) -> int:
        return len(self._positions)

    def _trainable(self, image_id: int) -> bool:
        """MMDetection v2's ``_filter_imgs``: an annotation of a selected class (crowd ones count)
        and both sides at least 32 pixels."""
        info = self.coco.imgs[image_id]
        annotations = self.coco.imgToAnns.get(image_id, [])
        return min(info["width"], info["height"]) >= 32 and any(a["category_id"] in self._label_of for a in annotations)

    @property
    def num_classes(self) -> int:
        """Classes with background (``len(classes) + 1``), the detector's ``num_classes``."""
        return len(self.classes) + 1

    def image_size(self, index: int) -> tuple[int, int]:
        """(height, width) of item ``index`` from the JSON, without reading the image."""
        info = self.coco.imgs[self.image_ids[index]]
        return int(info["height"]), int(info["width"])

    def __getitem__(self, key: Union[int, tuple[int, bool]]) -> tuple[Tensor, dict[str, Tensor]]:
        index, flip = key if isinstance(key, tuple) else (key, False)
        image, target = self._wrapped[self._positions[index]]
        image, target = self._clean(image, target)
        if flip:
            image, target = _hflip(image, target)
        return image.as_subclass(Tensor), {
            k: v.as_subclass(Tensor) if isinstance(v, Tensor) else v for k, v in target.items()
        }

    def _clean(self, image: Tensor, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """Drops crowd, tiny and unselected-class annotations; maps category ids to labels."""

        height, width = image.shape[-2:]
        boxes = target.get("boxes")
        if boxes is None:  # no annotation at all: the wrapper returns only the image id
            boxes = tv_tensors.BoundingBoxes(torch.zeros((0, 4)), format="XYXY", canvas_size=(height, width))
        count = boxes.shape[0]
        categories = torch.as_tensor(target.get("labels", []), dtype=torch.int64).reshape(count)
        crowd = torch.as_tensor(target.get("iscrowd", [0] * count), dtype=torch.bool).reshape(count)
        wh = boxes[:, 2:] - boxes[:, :2]
        known = torch.tensor([int(c) in self._label_of for c in categories], dtype=torch.bool).reshape(count)
        keep = ~crowd & (wh >= 1).all(dim=1) & known
        out: dict[str, Any] = {
            "boxes": tv_tensors.wrap(boxes[keep].float(), like=boxes),
            "labels": torch.tensor([self._label_of[int(c)] for c in categories[keep]], dtype=torch.int64),
            "image_id": int(target["image_id"]),
        }
        if self.with_masks:
            masks = target.get("masks")
            if masks is None:
                masks = torch.zeros((0, height, width), dtype=torch.uint8)
            out["masks"] = tv_tensors.Mask(masks[keep].to(torch.uint8))
        return image, out


def _select_categories(coco, classes: Optional[Sequence[str]]) -> tuple[list[int], list[str]]:
    categories = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    if classes is None:
        return [c["id"] for c in categories], [c["name"] for c in categories]
    by_name = {c["name"]: c["id"] for c in categories}
    missing = [name for name in classes if name not in by_name]
    if missing:
        raise ValueError(f"classes {missing} are not categories of the dataset; it has {sorted(by_name)}")
    return [by_name[name] for name in classes], list(classes)


def _hflip(image: Tensor, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """Transforms v2's horizontal flip of image, boxes (``x' = W - x``) and masks together."""

    target = dict(target)
    image = TF.horizontal_flip(image)
    target["boxes"] = TF.horizontal_flip(target["boxes"])
    if "masks" in target:
        target["masks"] = TF.horizontal_flip(target["masks"])
    return image, target


def collate(batch: list) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Keeps images of different sizes as a list (the model pads them)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


class GroupedBatchSampler(Sampler):
    """MMDetection v2's ``GroupSampler`` / ``DistributedGroupSampler``, made resumable.

    Images are grouped by aspect (``width > height`` or not) so a batch pads little. Each epoch,
    every group is shuffled and padded with random repeats to a multiple of
    ``batch_size * world_size``, cut into batches, the batches shuffled, and rank ``r`` takes
    every ``world_size``-th one (https://github.com/open-mmlab/mmdetection/blob/v2.28.2/mmdet/datasets/samplers/group_sampler.py).
    The order depends only on ``seed`` and the epoch, never on the global RNG, and each item
    carries its own flip decision, so a run resumed at ``start_batch`` sees the same data as an
    uninterrupted one.

    Args:
        sizes: (height, width) of every image.
        batch_size: Images per batch on one process.
        seed: Shuffling seed, the same on every rank.
        rank: This process' rank.
        world_size: Number of processes.
        flip_prob: Probability of a horizontal flip (0.5 in the configs; 0 disables it).
    """

    def __init__(
        self,
        sizes: Sequence[tuple[int, int]],
        *,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        flip_prob: float = 0.5,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(sizes) == 0:
            raise ValueError("the training dataset is empty (no image has annotations?)")
        self.flags = torch.tensor([int(w > h) for h, w in sizes])
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.flip_prob = flip_prob
        self.epoch, self.start_batch = 0, 0
        chunk = batch_size * world_size
        self._total = sum(math.ceil(int((self.flags == f).sum()) / chunk) * chunk for f in (0, 1))

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Selects the epoch's order and skips its first ``start_batch`` batches (resume)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        """Batches per epoch on this rank (including skipped ones)."""
        return self._total // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        batches = []
        for flag in (0, 1):
            members = torch.where(self.flags == flag)[0]
            if members.numel() == 0:
                continue
            members = members[torch.randperm(members.numel(), generator=generator)]
            chunk = self.batch_size * self.world_size
            extra = math.ceil(members.numel() / chunk) * chunk - members.numel()
            if extra:
                members = torch.cat([members, members[torch.randint(members.numel(), (extra,), generator=generator)]])
            batches += members.view(-1, self.batch_size).tolist()
        order = torch.randperm(len(batches), generator=generator).tolist()
        flips = (torch.rand(len(batches), self.batch_size, generator=generator) < self.flip_prob).tolist()
        mine = order[self.rank :: self.world_size]
        for position, batch in enumerate(mine):
            if position >= self.start_batch:
                yield [(index, flip) for index, flip in zip(batches[batch], flips[batch])]


class ShardSampler(Sampler):
    """Every ``world_size``-th index from ``rank``, in order, without padding (evaluation)."""

    def __init__(self, length: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, length, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)
