"""An in-memory predictor: images of any common form in, torchvision-style detections out.

    >>> import wszoo
    >>> predictor = wszoo.Predictor("mask_rcnn_r50_fpn_gn_ws_all_2x_coco")  # doctest: +SKIP
    >>> result = predictor("street.jpg")  # doctest: +SKIP
    >>> drawn = predictor.draw("street.jpg", result)  # (3, H, W) uint8  # doctest: +SKIP

Only images of the same size share a batch. GroupNorm normalises over whole feature maps,
padding included, so an image padded to the size of a larger batch-mate would get different
detections than alone; with equal sizes the padding is the image's own, and the detections are
those of the image alone up to float rounding (batched convolutions may sum in another order).
On the CPU a zoo detector runs a batch one image per pass anyway (``images_per_cpu_pass=1``,
see :class:`~wszoo.modeling.detector.WSRCNN`: faster there), so its detections are bit-identical
to single calls; on a GPU, pass ``batch_size=1`` for that.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..builders import get_model
from ..coco import COCO_CLASSES
from ..hub.weights import trained_weights
from ..image_io import decode_image_file
from ..model_spec import spec_settings
from ..modeling.transforms import binary_masks
from ..registry import get_entry
from ..settings import DEFAULT_SETTINGS
from .drawing import DRAW_THRESHOLD, draw_detections

__all__ = ["ImageInput", "Predictor", "to_image_tensor", "size_batches"]

ImageInput = Union[Tensor, np.ndarray, Image.Image, str, os.PathLike]
_ACCEPTED = (
    "a (3, H, W) uint8 or float (0..1) tensor, an (H, W, 3) uint8 numpy array (RGB, or BGR with bgr=True), "
    "a PIL image, or the path of a JPEG/PNG file"
)


def to_image_tensor(image: ImageInput, *, bgr: bool = False, name: str = "image") -> Tensor:
    """One input image as the (3, H, W) RGB tensor the detectors take (uint8, or float in [0, 1]).

    Args:
        image: A (3, H, W) tensor, an (H, W, 3) uint8 numpy array, a PIL image (any mode; converted
            to RGB) or a JPEG/PNG path (decoded as :func:`wszoo.image_io.decode_image_file` does).
        bgr: A numpy array is BGR (OpenCV's order), not RGB.
        name: What to call the input in error messages.

    Raises:
        TypeError: The input is of an unsupported type or dtype.
        ValueError: The input has the wrong shape or number of channels.
        FileNotFoundError: A path that does not exist.
        ImageError: A file that is not a readable JPEG/PNG.
    """
    if isinstance(image, Tensor):
        return _check_tensor(image, name)
    if isinstance(image, np.ndarray):
        return _from_numpy(image, bgr=bgr, name=name)
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"{name}: {os.fspath(image)} does not exist or is not a file")
        return decode_image_file(image)
    raise TypeError(f"{name} is a {type(image).__name__}; expected {_ACCEPTED}")


def _check_tensor(image: Tensor, name: str) -> Tensor:
    if image.dim() != 3 or image.shape[0] != 3:
        hint = (
            " (a numpy-style (H, W, 3) layout? permute(2, 0, 1) it)"
            if image.dim() == 3 and image.shape[-1] == 3
            else ""
        )
        raise ValueError(f"{name} is a tensor of shape {tuple(image.shape)}; expected (3, H, W) RGB{hint}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(f"{name} is a {image.dtype} tensor; expected uint8 (0..255) or float (0..1)")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(image.shape)}")
    if image.is_floating_point():
        if not bool(torch.isfinite(image).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        low, high = float(image.amin()), float(image.amax())
        if low < -1e-3 or high > 1.0 + 1e-3:
            raise ValueError(
                f"float {name} has values in [{low:.2f}, {high:.2f}]; float images must be in [0, 1] "
                "(pass uint8 for 0..255)"
            )
    return image


def _from_numpy(array: np.ndarray, *, bgr: bool, name: str) -> Tensor:
    if array.dtype != np.uint8:
        raise TypeError(f"{name} is a numpy array of dtype {array.dtype}; expected uint8 (H, W, 3)")
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"{name} is a numpy array of shape {array.shape}; expected (H, W, 3) RGB or BGR "
            "(convert grayscale or RGBA first)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {array.shape}")
    if bgr:
        array = array[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()


def size_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices of images grouped into batches of at most ``batch_size`` images of one size each."""
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, size in enumerate(sizes):
        by_size[tuple(size)].append(index)
    return [group[i : i + batch_size] for group in by_size.values() for i in range(0, len(group), batch_size)]


def _check_threshold(value: Optional[float], what: str) -> None:
    if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):  # refuses NaN too
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")


class Predictor:
    """Runs a detector on images in memory and returns torchvision-style detections.

    Args:
        model: A zoo name or alias (built with :func:`wszoo.get_model`), or a ready detector.
        weights: For a zoo name: ``"DEFAULT"`` (published), a ``.pth``/``.safetensors`` file,
            ``"hf-hub:ORG/REPO[@REV]"`` or None (random). Weights written by ``wszoo train`` bring
            their classes, image scale and test settings.
        device: Where to run (default: cuda if available for a zoo name; the model's device for a
            ready model).
        score_threshold: Detections scoring above it are returned (default: the model's own test
            threshold, 0.05 for the published configs). A ready model cannot return scores under
            its own ``score_thresh``.
        classes: Class names of labels 1..N (default: the weights' or the entry's; for a ready
            model with 81 classes, COCO's).
        image_scale: Keep-ratio test scale (long, short) for a zoo name (default: the weights').
        batch_size: Images per forward pass (only images of equal size share one).
        progress: Show a download progress bar when building.
        **build_options: More options for :func:`wszoo.get_model` (e.g. ``detections_per_img``).

    Masks come back as (N, H, W) bool tensors, MMDetection's binary masks (probability >= 0.5):
    the Predictor builds Mask R-CNNs with ``mask_format="bool"``, and thresholds a ready model's
    probabilities the same way. Results are on the CPU.
    """

    def __init__(
        self,
        model: Union[str, nn.Module],
        *,
        weights: Any = "DEFAULT",
        device: Union[str, torch.device, None] = None,
        score_threshold: Optional[float] = None,
        classes: Optional[Sequence[str]] = None,
        image_scale: Optional[tuple[int, int]] = None,
        batch_size: int = 4,
        progress: bool = True,
        **build_options: Any,
    ) -> None:
        _check_threshold(score_threshold, "score_threshold")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if isinstance(model, nn.Module):
            if weights != "DEFAULT" or image_scale is not None or build_options:
                raise ValueError(
                    "weights, image_scale and build options apply when the Predictor builds the model from a "
                    "zoo name; a ready model is used as it is"
                )
            self.model, self.classes = model, tuple(classes) if classes is not None else _default_classes(model)
            self.score_threshold = score_threshold
        elif isinstance(model, str):
            self.model, self.classes, self.score_threshold = _build(
                model,
                weights=weights,
                score_threshold=score_threshold,
                image_scale=image_scale,
                progress=progress,
                build_options=build_options,
            )
            self.classes = tuple(classes) if classes is not None else self.classes
        else:
            raise TypeError(f"model must be a zoo name or an nn.Module, got {type(model).__name__}")
        if device is None:
            device = "cuda" if isinstance(model, str) and torch.cuda.is_available() else None
        self.model = (self.model if device is None else self.model.to(device)).eval()
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        return next(self.model.parameters()).device

    def __call__(
        self,
        images: Union[ImageInput, Sequence[ImageInput]],
        *,
        bgr: bool = False,
        draw: bool = False,
        **draw_options: Any,
    ) -> Union[dict[str, Tensor], list[dict[str, Tensor]], tuple[Any, Any]]:
        """Detections for one image (a dict) or a list of images (a list of dicts, in order).

        Args:
            images: One image or a list of them, each as :func:`to_image_tensor` accepts.
            bgr: Numpy arrays are BGR (OpenCV's ``imread``), not RGB.
            draw: Also return the drawings: ``(results, drawings)``, each one or a list as the
                input is (no second decoding of the inputs).
            **draw_options: For ``draw=True``: :meth:`draw`'s ``threshold``, ``boxes``, ``masks``
                and ``scores``.

        Returns:
            ``boxes`` (N, 4) x1 y1 x2 y2 in input pixels, ``scores``, ``labels`` (1..num_classes)
            and, for Mask R-CNN, ``masks`` (N, H, W) bool; on the CPU.
        """
        if draw_options and not draw:
            raise TypeError(f"drawing options {sorted(draw_options)} need draw=True")
        single = not isinstance(images, (list, tuple))
        tensors = self.images(images, bgr=bgr)
        results = self.detect(tensors)
        if not draw:
            return results[0] if single else results
        drawings = self.draw(tensors, results, **draw_options)
        return (results[0], drawings[0]) if single else (results, drawings)

    def images(self, images: Union[ImageInput, Sequence[ImageInput]], *, bgr: bool = False) -> list[Tensor]:
        """The inputs as (3, H, W) tensors, as the call sees them (one image gives a list of one)."""
        if not isinstance(images, (list, tuple)):
            return [to_image_tensor(images, bgr=bgr)]
        return [to_image_tensor(image, bgr=bgr, name=f"image {index}") for index, image in enumerate(images)]

    def detect(self, images: Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """Detections for (3, H, W) tensors, batched by size; see :meth:`__call__`."""
        results: list[Optional[dict[str, Tensor]]] = [None] * len(images)
        sizes = [tuple(image.shape[-2:]) for image in images]
        device = self.device
        with torch.inference_mode():
            for batch in size_batches(sizes, self.batch_size):
                outputs = self.model([images[i].to(device) for i in batch])
                for index, output in zip(batch, outputs):
                    results[index] = self._finish(output)
        return results

    def _finish(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.score_threshold is not None:
            keep = output["scores"] > self.score_threshold  # strict, as the model's score_thresh
            output = {key: value[keep] for key, value in output.items()}
        output = {key: value.cpu() for key, value in output.items()}
        if "masks" in output:
            output["masks"] = binary_masks(output["masks"], DEFAULT_SETTINGS.mask_thresh)
        return output

    def draw(
        self,
        image: Union[ImageInput, Sequence[ImageInput]],
        result: Union[dict[str, Tensor], Sequence[dict[str, Tensor]]],
        *,
        bgr: bool = False,
        threshold: Optional[float] = DRAW_THRESHOLD,
        boxes: bool = True,
        masks: bool = True,
        scores: bool = True,
    ) -> Union[Tensor, list[Tensor]]:
        """``image`` with ``result`` drawn (see :func:`wszoo.inference.drawing.draw_detections`).

        Args:
            image: What was given to the call: one image or a list.
            result: What the call returned for it.
            bgr: Numpy arrays are BGR.
            threshold: Draw only detections scoring above this (default 0.3, as MMDetection's
                demo; None draws all). The results themselves are not changed.
            boxes: Draw boxes and labels.
            masks: Draw masks.
            scores: Put scores in the labels.

        Returns:
            A (3, H, W) uint8 RGB tensor, or a list of them for a list.
        """
        _check_threshold(threshold, "threshold")
        tensors = self.images(image, bgr=bgr)
        results = [result] if isinstance(result, dict) else list(result)
        if len(results) != len(tensors):
            raise ValueError(
                f"draw got {len(tensors)} image(s) and {len(results)} result(s); give one result per image"
            )
        options = dict(classes=self.classes, threshold=threshold, boxes=boxes, masks=masks, scores=scores)
        drawn = [draw_detections(_as_uint8(t), r, **options) for t, r in zip(tensors, results)]
        return drawn if isinstance(image, (list, tuple)) else drawn[0]


def _as_uint8(image: Tensor) -> Tensor:
    if image.dtype == torch.uint8:
        return image.cpu()
    return (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def _default_classes(model: nn.Module) -> tuple[str, ...]:
    categories = (getattr(model, "meta", None) or {}).get("categories")
    if categories:  # a zoo-built model knows its classes (label -> name, 0 is background)
        return tuple(categories[1:])
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    num_classes = getattr(getattr(predictor, "cls_score", None), "out_features", None)
    if num_classes == len(COCO_CLASSES) + 1:
        return COCO_CLASSES
    return ()  # labels are drawn and written as numbers


def _build(
    name: str,
    *,
    weights: Any,
    score_threshold: Optional[float],
    image_scale: Optional[tuple[int, int]],
    progress: bool,
    build_options: dict,
) -> tuple[nn.Module, tuple[str, ...], Optional[float]]:
    entry = get_entry(name)
    if entry.task == "backbone":
        raise ValueError(
            f"{entry.name} is an ImageNet backbone; a Predictor needs a detector "
            "(see `wszoo list --task object_detection`)"
        )
    if isinstance(weights, str) and weights.lower() == "none":
        weights = None
    # Weights written by `wszoo train` bring their classes, image scale and test settings; the
    # score threshold is needed before building. get_model is given the weights as given (an
    # hf-hub: name stays one in model.meta; the Hub file is cached, so it is fetched once).
    _, spec = trained_weights(entry, weights) if weights is not None else (None, None)
    settings = spec_settings(spec)
    options: dict[str, Any] = {"mask_format": "bool", **build_options}
    if score_threshold is not None:
        # Below the model's threshold the model must keep low scores too; above it, they are filtered.
        options["score_thresh"] = min(score_threshold, settings.score_thresh)
    if image_scale is not None:  # given explicitly: wins over the weights' own
        options["image_scale"] = tuple(image_scale)
    model = get_model(entry.name, weights=weights, progress=progress, **options)
    return model, _default_classes(model), score_threshold
