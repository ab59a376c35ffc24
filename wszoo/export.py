"""Export for deployment: ``torch.export`` programs and ONNX graphs of the zoo's detectors.

The exported graph's contract (the same for both formats):

* one input ``image``: uint8 RGB ``(3, H, W)``, H and W dynamic (32..4096);
* outputs ``boxes`` ``(N, 4)`` float32 (x1, y1, x2, y2 in input pixels), ``scores`` ``(N,)``
  float32, ``labels`` ``(N,)`` int64 (1..num_classes-1), and for Mask R-CNN ``masks``:
  ``(N, H, W)`` bool (``mask_format="bool"``, default) or ``(N, 1, H, W)`` float32
  probabilities (``mask_format="probs"``);
* inside the graph: keep-ratio resize (the torch path: OpenCV is no ONNX op, so pixels may
  differ from the exact OpenCV path by one grey level), normalisation, padding, the network with
  weight standardization folded into plain convolutions, box decoding, class-wise NMS, the best
  ``detections_per_img`` and mask pasting.

    >>> model = wszoo.get_model("mask_rcnn_r50_fpn_gn_ws_all_2x_coco", weights="DEFAULT")  # doctest: +SKIP
    >>> wszoo.export_onnx(model, "mask_rcnn.onnx")  # doctest: +SKIP
    >>> detector = OnnxDetector("mask_rcnn.onnx")  # doctest: +SKIP
    >>> detector([image])[0]["boxes"]  # doctest: +SKIP

ONNX export and :class:`OnnxDetector` need the ``export`` extra (``pip install "wszoo[export]"``:
onnx, onnxscript, onnxruntime); they are imported only when used.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram

from .modeling.detector import WSRCNN
from .modeling.layers import fold_weight_standardization

__all__ = [
    "OUTPUTS",
    "ExportedDetector",
    "OnnxDetector",
    "export_onnx",
    "export_program",
    "save_program",
]

OUTPUTS = ("boxes", "scores", "labels", "masks")
MIN_SIDE, MAX_SIDE = 32, 4096
DEFAULT_OPSET = 18


class _SingleImage(nn.Module):
    """The detector as the exported graph sees it: one uint8 image in, a tuple of tensors out."""

    def __init__(self, model: WSRCNN) -> None:
        super().__init__()
        self.model = model
        self.with_mask = model.roi_heads.has_mask()

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        out = self.model([image])[0]
        return tuple(out[k] for k in OUTPUTS if k in out)


def _deployable(model: nn.Module, *, mask_format: str, image_scale: Optional[tuple[int, int]]) -> _SingleImage:
    if not isinstance(model, WSRCNN):
        raise TypeError(f"expected a wszoo detector (WSRCNN), got {type(model).__name__}; backbones do not export")
    if mask_format not in ("bool", "probs"):
        raise ValueError(f"mask_format must be 'bool' or 'probs', got {mask_format!r}")
    if image_scale is not None and (len(image_scale) != 2 or min(image_scale) <= 0):
        raise ValueError(f"image_scale must be (long, short) with positive sides, got {image_scale!r}")
    model = fold_weight_standardization(copy.deepcopy(model)).eval().cpu()
    model.transform.resize_backend = "torch"
    if image_scale is not None:
        model.transform.scale = tuple(int(v) for v in image_scale)
    model.roi_heads.mask_format = mask_format
    return _SingleImage(model)


def _example_and_shapes() -> tuple[tuple[Tensor], dict]:
    # An example whose sides differ and are no multiple of 32; the graph stays general (dynamic).
    example = torch.randint(0, 256, (3, 203, 301), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dims = {"image": {1: Dim("height", min=MIN_SIDE, max=MAX_SIDE), 2: Dim("width", min=MIN_SIDE, max=MAX_SIDE)}}
    return (example,), dims


def export_program(
    model: nn.Module, *, mask_format: str = "bool", image_scale: Optional[tuple[int, int]] = None
) -> ExportedProgram:
    """``torch.export`` of a detector with dynamic image height and width (see the module's contract).

    Args:
        model: A wszoo detector (it is copied; the original is left as it is).
        mask_format: ``"bool"`` or ``"probs"`` masks (Mask R-CNN).
        image_scale: Keep-ratio resize target (long, short); default the model's.
    """
    wrapper = _deployable(model, mask_format=mask_format, image_scale=image_scale)
    example, dims = _example_and_shapes()
    with torch.no_grad():
        return torch.export.export(wrapper, example, dynamic_shapes=dims, strict=False)


def save_program(program: ExportedProgram, path: Union[str, os.PathLike]) -> Path:
    """Writes an exported program as ``.pt2``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)  # torch.export.save wants a .pt2 name
    try:
        torch.export.save(program, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _onnx_translations() -> dict:
    """The exporter's ATen-to-ONNX translations that wszoo replaces (needs onnxscript): GroupNorm,
    whose default lowering loses precision in onnxruntime (see :mod:`wszoo.onnx_group_norm`)."""
    from .onnx_group_norm import group_norm

    return {torch.ops.aten.group_norm.default: group_norm}


def export_onnx(
    model: Union[nn.Module, ExportedProgram],
    path: Union[str, os.PathLike],
    *,
    opset: int = DEFAULT_OPSET,
    mask_format: str = "bool",
    image_scale: Optional[tuple[int, int]] = None,
) -> Path:
    """Exports a detector to ONNX through ``torch.export`` (the dynamo exporter), atomically.

    Args:
        model: A wszoo detector (copied, folded, switched to the torch resize path), or a
            program made by :func:`export_program` (then ``mask_format`` and ``image_scale``
            are the program's).
        path: The ``.onnx`` file to write.
        opset: ONNX opset (18 or newer).
        mask_format: ``"bool"`` or ``"probs"`` masks (Mask R-CNN).
        image_scale: Keep-ratio resize target (long, short); default the model's.

    Returns:
        ``path``.
    """
    if opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be at least {DEFAULT_OPSET} (the dynamo exporter's), got {opset}")
    example, dims = _example_and_shapes()
    if isinstance(model, ExportedProgram):
        wrapper, names = model, OUTPUTS[: len(model.graph_signature.user_outputs)]
    else:
        wrapper = _deployable(model, mask_format=mask_format, image_scale=image_scale)
        names = OUTPUTS[: 4 if wrapper.with_mask else 3]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                example,
                str(tmp),
                dynamo=True,
                dynamic_shapes=dims,
                input_names=["image"],
                output_names=list(names),
                opset_version=opset,
                external_data=False,
                verbose=False,
                custom_translation_table=_onnx_translations(),
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _as_images(images: Union[Tensor, Sequence[Tensor]]) -> list[Tensor]:
    images = [images] if isinstance(images, Tensor) and images.dim() == 3 else list(images)
    for index, image in enumerate(images):
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            got = (
                f"{type(image).__name__} {tuple(image.shape)} {image.dtype}"
                if isinstance(image, Tensor)
                else type(image).__name__
            )
            raise ValueError(f"image {index}: the exported graph takes uint8 RGB (3, H, W) tensors, got {got}")
        if min(image.shape[1:]) < MIN_SIDE or max(image.shape[1:]) > MAX_SIDE:
            raise ValueError(
                f"image {index}: sides must be within {MIN_SIDE}..{MAX_SIDE}, got {tuple(image.shape[1:])}"
            )
    return images


class ExportedDetector:
    """A ``.pt2`` program as a callable like the eager model: ``detector(images) -> list[dict]``."""

    def __init__(self, path: Union[str, os.PathLike, ExportedProgram]) -> None:
        program = path if isinstance(path, ExportedProgram) else torch.export.load(str(path))
        self.module = program.module()
        self.names = OUTPUTS[: len(program.graph_signature.user_outputs)]

    def __call__(self, images: Union[Tensor, Sequence[Tensor]]) -> list[dict[str, Tensor]]:
        with torch.no_grad():
            return [dict(zip(self.names, self.module(image.cpu()))) for image in _as_images(images)]


class OnnxDetector:
    """An exported ONNX detector run by onnxruntime, called like the eager model.

    Args:
        path: The ``.onnx`` file.
        providers: onnxruntime execution providers (default: the CPU).
    """

    def __init__(self, path: Union[str, os.PathLike], *, providers: Optional[Sequence[str]] = None) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=list(providers or ["CPUExecutionProvider"]))
        self.names = [o.name for o in self.session.get_outputs()]

    def __call__(self, images: Union[Tensor, Sequence[Tensor]]) -> list[dict[str, Tensor]]:
        results = []
        for image in _as_images(images):
            outputs = self.session.run(None, {"image": image.cpu().numpy()})
            results.append({name: torch.from_numpy(value) for name, value in zip(self.names, outputs)})
        return results
