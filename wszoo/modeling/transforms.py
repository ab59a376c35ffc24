"""MMDetection-exact pre-processing (resize, normalise, pad) and mask pasting.

Pre-processing follows the test pipeline of the GN+WS configs: ``Resize(scale=(1333, 800),
keep_ratio=True)`` then ``DetDataPreprocessor`` (mean/std of RGB, pad to a multiple of 32 with
0 after normalisation). Two resize paths:

* ``"cv2"``: OpenCV's ``INTER_LINEAR`` on the uint8 image, as MMCV does. Bit-exact with
  MMDetection; used by default for uint8 input when OpenCV is installed.
* ``"torch"``: ``F.interpolate(mode="bilinear", align_corners=False)`` in float32, rounded back
  to integers for uint8 input. OpenCV resizes with 11-bit fixed-point weights, so pixels can
  differ by one grey level; ``benchmarks/resize_paths.py`` measures the difference.

Float input is taken as torchvision's detection models take it: RGB in [0, 1]. It is scaled
by 255 and resized by the torch path (OpenCV would need uint8 to be exact).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from ..settings import DEFAULT_SETTINGS

__all__ = [
    "ImageMeta",
    "PaddedImageList",
    "DetectionTransform",
    "rescale_size",
    "resize_image",
    "bilinear_resize",
    "paste_masks",
    "binary_masks",
    "scale_vector",
    "has_cv2",
    "to_uint8",
]

# DetDataPreprocessor of the configs (RGB order, 0..255 scale).
IMAGE_MEAN = DEFAULT_SETTINGS.image_mean
IMAGE_STD = DEFAULT_SETTINGS.image_std


class ImageMeta(NamedTuple):
    """Where an image went during pre-processing (MMDetection's ``img_meta``).

    Attributes:
        ori_shape: (height, width) of the input image.
        img_shape: (height, width) after resizing, before padding.
        scale_factor: (new_width / width, new_height / height), per axis as MMDetection keeps it.
    """

    ori_shape: tuple[int, int]
    img_shape: tuple[int, int]
    scale_factor: tuple[float, float]


class PaddedImageList(ImageList):
    """torchvision's ``ImageList`` plus each image's own padded extent.

    ``pad_shapes[i]`` is image i's resized size rounded up to the size divisor (MMDetection's
    ``pad_shape``); the batch canvas ``tensors.shape[-2:]`` (``batch_input_shape``) is the
    largest of them. The RPN counts only the anchors inside an image's own ``pad_shape``.
    """

    def __init__(self, tensors: Tensor, image_sizes: list[tuple[int, int]], pad_shapes: list[tuple[int, int]]) -> None:
        super().__init__(tensors, image_sizes)
        self.pad_shapes = pad_shapes

    def to(self, device: torch.device) -> PaddedImageList:
        return PaddedImageList(self.tensors.to(device), self.image_sizes, self.pad_shapes)


def to_uint8(image: Tensor) -> Tensor:
    """An integer image of another bit depth (e.g. a 16-bit PNG) scaled to uint8; uint8 as is."""
    if image.dtype == torch.uint8:
        return image
    if image.is_floating_point():
        raise ValueError(f"expected an integer image from a decoder, got {image.dtype}")
    shift = torch.iinfo(image.dtype).bits - 8
    return (image.to(torch.int32) >> shift).to(torch.uint8)


def has_cv2() -> bool:
    """Whether OpenCV can be imported (for the exact resize path)."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def rescale_size(height: int, width: int, scale: tuple[int, int] = DEFAULT_SETTINGS.image_scale) -> tuple[int, int]:
    """Output (height, width) of a keep-ratio resize, with MMCV's rounding.

    Reproduces ``mmcv.imrescale``'s size
    (https://github.com/open-mmlab/mmcv/blob/v2.1.0/mmcv/image/geometric.py#L24-L31 and L171-L198):
    factor ``min(max(scale) / max(h, w), min(scale) / min(h, w))``, then
    ``int(x * factor + 0.5)`` (round half up) per side.
    """
    if isinstance(height, torch.SymInt) or isinstance(width, torch.SymInt):
        # Traced with symbolic sizes (torch.export): the same formula without Python branches,
        # so one exported graph serves portrait and landscape images of any size.
        factor = torch.sym_min(max(scale) / torch.sym_max(height, width), min(scale) / torch.sym_min(height, width))
        return torch.sym_int(height * factor + 0.5), torch.sym_int(width * factor + 0.5)
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * float(factor) + 0.5), int(width * float(factor) + 0.5)


def resize_image(image: Tensor, size: tuple[int, int], *, backend: str) -> Tensor:
    """Bilinearly resizes a (3, H, W) image to ``size``, returning float32 on a 0..255 scale.

    Args:
        image: uint8 (0..255) or float (0..1) RGB image.
        size: Output (height, width).
        backend: ``"cv2"`` (uint8 input only, bit-exact with MMCV) or ``"torch"``.
    """
    if backend == "cv2":
        import cv2

        if image.dtype != torch.uint8:
            raise ValueError("the cv2 resize path needs a uint8 image; use backend='torch' for float input")
        array = image.permute(1, 2, 0).contiguous().cpu().numpy()
        resized = cv2.resize(array, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(resized).permute(2, 0, 1).to(device=image.device, dtype=torch.float32)
    if backend != "torch":
        raise ValueError(f"resize backend must be 'cv2' or 'torch', got {backend!r}")
    is_uint8 = image.dtype == torch.uint8
    scaled = image.float() if is_uint8 else image.float() * 255.0
    if not torch.compiler.is_exporting() and tuple(image.shape[-2:]) == tuple(size):
        return scaled  # (interpolating to the same size is the identity too, just slower)
    out = bilinear_resize(scaled, size)
    # MMCV resizes uint8 to uint8: keep integer grey levels so the two paths stay within one.
    return out.round_().clamp_(0, 255) if is_uint8 else out


def bilinear_resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of a float (C, H, W) image, ``F.interpolate(align_corners=False)``'s formula.

    Written out as index selections, multiplications and additions in float32 rather than as
    one interpolation kernel, so an exported graph (ONNX's ``Resize`` computes its sampling
    positions differently) gives the same bits as eager PyTorch: the exported detectors then
    equal the eager ones, not merely come within a grey level.
    """
    rows0, rows1, top, bottom = _bilinear_axis(image.shape[1], size[0], image.device)
    cols0, cols1, left, right = _bilinear_axis(image.shape[2], size[1], image.device)

    def across(lines: Tensor) -> Tensor:
        return lines.index_select(2, cols0) * left + lines.index_select(2, cols1) * right

    return across(image.index_select(1, rows0)) * top[:, None] + across(image.index_select(1, rows1)) * bottom[:, None]


def _bilinear_axis(in_size: int, out_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source indices and weights along one axis (half-pixel centres, clamped at the edges)."""
    scale = torch.full((), in_size, dtype=torch.float32, device=device) / out_size
    source = ((torch.arange(out_size, device=device, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    first = source.floor().to(torch.int64).clamp(max=in_size - 1)
    second = (first + 1).clamp(max=in_size - 1)
    far = source - first.to(torch.float32)
    return first, second, 1 - far, far


class DetectionTransform(nn.Module):
    """Resize, normalise and batch images as MMDetection does for these configs.

    Returns a :class:`PaddedImageList` (``image_sizes`` are the resized, unpadded sizes, as in
    torchvision; ``pad_shapes`` those sizes rounded up to ``size_divisor``) and one
    :class:`ImageMeta` per image for mapping results back. Training targets come back in the
    resized image, their masks zero-padded to the batch canvas as MMDetection's data
    preprocessor pads them (``pad_mask=True``).

    Args:
        scale: Keep-ratio target (long side, short side).
        size_divisor: The batch is padded bottom/right to a multiple of this.
        resize_backend: ``"auto"`` (OpenCV for uint8 input when installed, else torch),
            ``"cv2"`` or ``"torch"``.
    """

    def __init__(
        self,
        *,
        scale: tuple[int, int] = DEFAULT_SETTINGS.image_scale,
        size_divisor: int = DEFAULT_SETTINGS.pad_size_divisor,
        resize_backend: str = "auto",
    ) -> None:
        super().__init__()
        if resize_backend not in ("auto", "cv2", "torch"):
            raise ValueError(f"resize_backend must be 'auto', 'cv2' or 'torch', got {resize_backend!r}")
        self.scale = tuple(scale)
        self.size_divisor = size_divisor
        self.resize_backend = resize_backend
        self.register_buffer("mean", torch.empty(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.empty(3, 1, 1), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """(Re)creates the mean/std buffers, which no state dict carries (e.g. after a meta-device build)."""
        device = self.mean.device if self.mean.device.type != "meta" else torch.device("cpu")
        self.mean = torch.tensor(IMAGE_MEAN, device=device).view(3, 1, 1)
        self.std = torch.tensor(IMAGE_STD, device=device).view(3, 1, 1)

    def _backend_for(self, image: Tensor) -> str:
        if self.resize_backend != "auto":
            return self.resize_backend
        return "cv2" if image.dtype == torch.uint8 and has_cv2() else "torch"

    def forward(
        self, images: Sequence[Tensor], targets: Optional[list[dict[str, Tensor]]] = None
    ) -> tuple[PaddedImageList, Optional[list[dict[str, Tensor]]], list[ImageMeta]]:
        normalised, metas = [], []
        targets = [dict(t) for t in targets] if targets is not None else None
        for index, image in enumerate(images):
            height, width = image.shape[-2:]
            new_size = rescale_size(height, width, self.scale)
            resized = resize_image(image, new_size, backend=self._backend_for(image))
            normalised.append((resized - self.mean) / self.std)
            meta = ImageMeta((height, width), new_size, (new_size[1] / width, new_size[0] / height))
            metas.append(meta)
            if targets is not None:
                targets[index] = _resize_target(targets[index], meta)
        batch = self._pad(normalised)
        if targets is not None:
            targets = [_pad_masks(t, tuple(batch.shape[-2:])) for t in targets]
        pad_shapes = [self._padded_size(m.img_shape) for m in metas]
        return PaddedImageList(batch, [m.img_shape for m in metas], pad_shapes), targets, metas

    def _padded_size(self, size: tuple[int, int]) -> tuple[int, int]:
        # DetDataPreprocessor._get_pad_shape: each image's own size rounded up to the divisor
        # (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/data_preprocessors/data_preprocessor.py#L151-L165).
        divisor = self.size_divisor
        return ((size[0] + divisor - 1) // divisor * divisor, (size[1] + divisor - 1) // divisor * divisor)

    def _pad(self, images: list[Tensor]) -> Tensor:
        divisor = self.size_divisor
        # Integer ceiling (no float): exact, and free of guards when sizes are symbolic.
        height = (functools.reduce(torch.sym_max, (i.shape[1] for i in images)) + divisor - 1) // divisor * divisor
        width = (functools.reduce(torch.sym_max, (i.shape[2] for i in images)) + divisor - 1) // divisor * divisor
        # Zero padding bottom/right (after normalisation, as DetDataPreprocessor pads).
        return torch.stack([F.pad(image, (0, width - image.shape[2], 0, height - image.shape[1])) for image in images])


def _resize_target(target: dict[str, Tensor], meta: ImageMeta) -> dict[str, Tensor]:
    """Scales boxes (and resizes masks, nearest) into the resized image, as MMDetection does."""
    sx, sy = meta.scale_factor
    boxes = target["boxes"] * target["boxes"].new_tensor([sx, sy, sx, sy])
    target["boxes"] = boxes
    if "masks" in target:
        masks = target["masks"]
        resized = F.interpolate(masks[:, None].float(), size=meta.img_shape, mode="nearest")[:, 0]
        target["masks"] = resized.to(masks.dtype)
    return target


def scale_vector(meta: ImageMeta, like: Tensor, *, reciprocal: bool = False) -> Tensor:
    """``[sx, sy, sx, sy]`` (or their reciprocals) as a float32 tensor on ``like``'s device.

    Eager: MMDetection's numbers, computed in double precision and rounded once. Under
    torch.export the sizes are symbolic, so the factors are computed in the graph instead (a
    Python float would freeze the example image's scale into it).
    """
    if torch.compiler.is_exporting():
        (height, width), (new_height, new_width) = meta.ori_shape, meta.img_shape
        one = like.new_ones((), dtype=torch.float32)
        sx, sy = one * new_width / width, one * new_height / height
        vector = torch.stack([sx, sy, sx, sy])
        return 1 / vector if reciprocal else vector
    sx, sy = meta.scale_factor
    values = [1 / sx, 1 / sy, 1 / sx, 1 / sy] if reciprocal else [sx, sy, sx, sy]
    return like.new_tensor(values, dtype=torch.float32)


def binary_masks(masks: Tensor, threshold: float = DEFAULT_SETTINGS.mask_thresh) -> Tensor:
    """(N, H, W) bool masks from either output format: ``"bool"`` as is, ``"probs"`` ``>= threshold``."""
    if masks.dtype == torch.bool:
        return masks
    return (masks[:, 0] if masks.dim() == 4 else masks) >= threshold


def _pad_masks(target: dict[str, Tensor], canvas: tuple[int, int]) -> dict[str, Tensor]:
    """Zero-pads ``masks`` at the bottom and right to the batch canvas.

    MMDetection's ``pad_gt_masks`` pads every image's masks to ``batch_input_shape`` in training
    (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/data_preprocessors/data_preprocessor.py#L185-L193),
    so mask targets sampled within half a pixel of the image's right and bottom edges blend with
    the zeros beyond instead of repeating the edge pixel.
    """
    if "masks" not in target:
        return target
    masks = target["masks"]
    extra_h, extra_w = canvas[0] - masks.shape[-2], canvas[1] - masks.shape[-1]
    if extra_h or extra_w:
        target["masks"] = F.pad(masks, (0, extra_w, 0, extra_h))
    return target


def paste_masks(
    masks: Tensor,
    boxes: Tensor,
    image_shape: tuple[int, int],
    *,
    threshold: Optional[float] = None,
    vectorised: Optional[bool] = None,
    chunk_elements: int = 1 << 24,
) -> Tensor:
    """Pastes (N, h, w) mask probabilities into the image at ``boxes`` (original-image pixels).

    Reproduces MMDetection's ``_do_paste_mask`` with ``skip_empty=True``, its CPU path
    (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/roi_heads/mask_heads/fcn_mask_head.py#L390-L460):
    each instance is sampled bilinearly (``grid_sample``, zero padding) at pixel centres inside
    ``[floor(x0) - 1, ceil(x1) + 1]`` and left 0 elsewhere.

    Args:
        masks: (N, h, w) probabilities (any float dtype; pasted in float32).
        boxes: (N, 4) boxes in the output image's pixels.
        image_shape: Output (height, width).
        threshold: None returns probabilities (N, 1, H, W) float32; a number returns
            MMDetection's binary masks (N, H, W) bool, ``probability >= threshold``, written
            without a float image-sized intermediate.
        vectorised: Paste many instances per ``grid_sample`` call (MMDetection's chunked GPU
            path) over the union of their regions, zeroing each instance outside its own region,
            so the values are bit-identical to the per-instance path. Default: on every device
            but the CPU, where the per-instance loop costs least.
        chunk_elements: Most float elements one vectorised chunk may hold.
    """
    height, width = image_shape
    masks, boxes = masks.float(), boxes.float()
    count = masks.shape[0]
    if threshold is None:
        out = masks.new_zeros((count, 1, height, width))
        view = out[:, 0]
    else:
        out = view = torch.zeros((count, height, width), dtype=torch.bool, device=masks.device)
    if torch.compiler.is_exporting():
        # No data-dependent sizes in an exported graph: one sampling over the whole image, each
        # instance zeroed outside its own region (the same values as the paths below).
        pasted = _within_regions(_sample(masks, boxes, 0, 0, width, height), _paste_regions(boxes, height, width), 0, 0)
        return pasted[:, None] if threshold is None else pasted >= threshold
    if count == 0:
        return out
    regions = _paste_regions(boxes, height, width)
    if vectorised is None:
        vectorised = masks.device.type != "cpu"
    if not vectorised:
        for index in range(count):
            x0, y0, x1, y1 = (int(v) for v in regions[index])
            pasted = _sample(masks[index : index + 1], boxes[index : index + 1], x0, y0, x1, y1)[0]
            view[index, y0:y1, x0:x1] = pasted if threshold is None else pasted >= threshold
        return out
    for chunk in _chunks(regions, chunk_elements):
        x0, y0 = (int(v) for v in regions[chunk, :2].amin(dim=0))
        x1, y1 = (int(v) for v in regions[chunk, 2:].amax(dim=0))
        pasted = _within_regions(_sample(masks[chunk], boxes[chunk], x0, y0, x1, y1), regions[chunk], x0, y0)
        view[chunk, y0:y1, x0:x1] = pasted if threshold is None else pasted >= threshold
    return out


def _within_regions(pasted: Tensor, regions: Tensor, x0: int, y0: int) -> Tensor:
    """``pasted`` (n, h, w), sampled over a region starting at (x0, y0), zeroed outside each
    instance's own region."""
    rows = torch.arange(pasted.shape[1], device=pasted.device) + y0
    cols = torch.arange(pasted.shape[2], device=pasted.device) + x0
    inside = (
        (rows[None, :, None] >= regions[:, 1, None, None])
        & (rows[None, :, None] < regions[:, 3, None, None])
        & (cols[None, None, :] >= regions[:, 0, None, None])
        & (cols[None, None, :] < regions[:, 2, None, None])
    )
    return torch.where(inside, pasted, pasted.new_zeros(()))


def _paste_regions(boxes: Tensor, height: int, width: int) -> Tensor:
    """(N, 4) int64 [x0, y0, x1, y1) pixel regions each instance is pasted into (``skip_empty``)."""
    x0y0 = torch.clamp(boxes[:, :2].floor() - 1, min=0).to(torch.int32)
    x1 = torch.clamp(boxes[:, 2].ceil() + 1, max=width).to(torch.int32)
    y1 = torch.clamp(boxes[:, 3].ceil() + 1, max=height).to(torch.int32)
    regions = torch.cat([x0y0, x1[:, None], y1[:, None]], dim=1).to(torch.int64)
    # A box entirely left of / above the image gets an empty region, not a negative one.
    regions[:, 2:] = torch.maximum(regions[:, 2:], regions[:, :2])
    return regions


def _chunks(regions: Tensor, budget: int) -> list[Tensor]:
    """Consecutive groups of instances whose union region times count stays within ``budget``."""
    chunks, start = [], 0
    count = regions.shape[0]
    lo, hi = regions[:, :2].tolist(), regions[:, 2:].tolist()
    while start < count:
        end, (ux0, uy0), (ux1, uy1) = start + 1, lo[start], hi[start]
        while end < count:
            nx0, ny0 = min(ux0, lo[end][0]), min(uy0, lo[end][1])
            nx1, ny1 = max(ux1, hi[end][0]), max(uy1, hi[end][1])
            if (end + 1 - start) * max(nx1 - nx0, 0) * max(ny1 - ny0, 0) > budget:
                break
            ux0, uy0, ux1, uy1, end = nx0, ny0, nx1, ny1, end + 1
        chunks.append(torch.arange(start, end, device=regions.device))
        start = end
    return chunks


def _sample(masks: Tensor, boxes: Tensor, x0_int: int, y0_int: int, x1_int: int, y1_int: int) -> Tensor:
    """(n, y1 - y0, x1 - x0) bilinear samples of (n, h, w) masks at the pixel centres of a region."""
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    img_y = torch.arange(y0_int, y1_int, device=masks.device).to(torch.float32) + 0.5
    img_x = torch.arange(x0_int, x1_int, device=masks.device).to(torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    # A zero-size box gives inf; MMDetection maps those coordinates to 0.
    img_x = torch.where(torch.isinf(img_x), torch.zeros_like(img_x), img_x)
    img_y = torch.where(torch.isinf(img_y), torch.zeros_like(img_y), img_y)
    count = masks.shape[0]
    grid_x = img_x[:, None, :].expand(count, img_y.size(1), img_x.size(1))
    grid_y = img_y[:, :, None].expand(count, img_y.size(1), img_x.size(1))
    grid = torch.stack([grid_x, grid_y], dim=3)
    return F.grid_sample(masks[:, None], grid, align_corners=False)[:, 0]
