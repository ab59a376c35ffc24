"""One builder per zoo entry (the names of ``wszoo.list_models()``), over one private factory.

Builders are keyword-only and typed, and never touch the network unless weights are asked for.
Each is one line over :func:`_build`; the :func:`_zoo_builder` decorator gives it, from the zoo
table and :func:`~wszoo.modeling.detector.build_detector`, its full signature (every detector
option, so ``inspect.signature``, ``help()`` and IDEs at run time show them) and the rest of its
docstring (the published COCO val2017 AP, GFLOPs, parameters and each option), so nothing is
written twice and nothing drifts. The built model carries ``model.weights`` (the weights enum
member it was built from, or None), ``model.meta`` and timm's ``model.pretrained_cfg``.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
import textwrap
from typing import Any, Callable, Optional

import torch
from torch import nn

from .arch import DetectorArch
from .hub.hf_load import HubWeights
from .hub.pretrained import WeightsEnum, get_model_weights, member_name
from .hub.weights import WeightsArg, load_state_dict, means_default, resolve_weights, weights_file
from .meta import built_meta, entry_meta, pretrained_cfg
from .model_spec import check_spec, read_spec, spec_build_kwargs
from .modeling.backbone import ResNet
from .modeling.detector import WSRCNN, build_detector, build_resnet
from .registry import entries, get_entry
from .zoo import ZooEntry

# The builders, one per zoo entry: what ``hubconf.py`` and ``wszoo`` re-export. ``get_model``,
# ``get_model_info`` and ``get_model_meta`` are public too, through the package root, but are not
# hub entry points.
__all__ = [
    "faster_rcnn_r50_fpn_gn_ws_all_1x_coco",
    "faster_rcnn_r101_fpn_gn_ws_all_1x_coco",
    "faster_rcnn_x50_32x4d_fpn_gn_ws_all_1x_coco",
    "faster_rcnn_x101_32x4d_fpn_gn_ws_all_1x_coco",
    "mask_rcnn_r50_fpn_gn_ws_all_2x_coco",
    "mask_rcnn_r101_fpn_gn_ws_all_2x_coco",
    "mask_rcnn_x50_32x4d_fpn_gn_ws_all_2x_coco",
    "mask_rcnn_x101_32x4d_fpn_gn_ws_all_2x_coco",
    "mask_rcnn_r50_fpn_gn_ws_all_20_23_24e_coco",
    "mask_rcnn_r101_fpn_gn_ws_all_20_23_24e_coco",
    "mask_rcnn_x50_32x4d_fpn_gn_ws_all_20_23_24e_coco",
    "mask_rcnn_x101_32x4d_fpn_gn_ws_all_20_23_24e_coco",
    "resnet50_gn_ws",
    "resnet101_gn_ws",
    "resnext50_32x4d_gn_ws",
    "resnext101_32x4d_gn_ws",
    "resnext50_32x4d_gn",
    "resnext101_32x4d_gn",
    "faster_rcnn_r18_fpn_gn_ws",
    "mask_rcnn_r18_fpn_gn_ws",
]


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Builds a zoo model by name or alias; ``weights="DEFAULT"`` loads the published weights.

    Args:
        name: A name of ``list_models()``, or an MMDetection v2/v3 config name.
        **kwargs: The builder's keyword arguments (``weights``, ``pretrained``, ``num_classes``,
            ``progress`` and, for detectors, the options of ``build_detector``); see the builder's
            docstring (``help(wszoo.<name>)``).
    """
    return _build(get_entry(name).name, **kwargs)


def get_model_info(name: str) -> ZooEntry:
    """The zoo entry (published metrics, URLs, hash, classes) of a model name or alias."""
    return get_entry(name)


def get_model_meta(name: str) -> dict[str, Any]:
    """The metadata of a model name or alias as data (``Weights.meta``; see :mod:`wszoo.meta`)."""
    return entry_meta(get_entry(name))


def hub_aliases() -> dict[str, Callable[..., nn.Module]]:
    """MMDetection v2/v3 config name -> builder, for ``torch.hub.load(repo, "<config name>")``."""
    return {
        alias: globals()[e.name]
        for e in entries()
        if e.name in __all__
        for alias in (e.mmdet_v2_config, e.mmdet_v3_config)
        if alias and alias != e.name
    }


# ---- the signatures and docstrings, from build_detector and the table ----

_NOT_GIVEN: Any = object()
_BASE = (
    inspect.Parameter("weights", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=WeightsArg),
    inspect.Parameter("pretrained", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool),
    inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=True, annotation=bool),
    inspect.Parameter("num_classes", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Optional[int]),
)
# build_detector's options, as it declares them (less what the builder sets itself).
DETECTOR_OPTIONS: tuple[inspect.Parameter, ...] = tuple(
    p
    for name, p in inspect.signature(build_detector, eval_str=True).parameters.items()
    if name not in ("arch", "num_classes")
)
_DETECTOR_SIGNATURE = inspect.Signature([*_BASE, *DETECTOR_OPTIONS], return_annotation=WSRCNN)
_BACKBONE_SIGNATURE = inspect.Signature(list(_BASE), return_annotation=ResNet)


def _documented_args(function: Callable) -> dict[str, str]:
    """``name -> description`` of a Google-style docstring's Args section."""
    args, name = {}, None
    section = (function.__doc__ or "").split("Args:", 1)[-1].split("\n\n", 1)[0]
    for line in section.splitlines():
        match = re.match(r"\s{8}(\w+): (.*)", line)
        if match:
            name = match.group(1)
            args[name] = match.group(2).strip()
        elif name and line.strip():
            args[name] += " " + line.strip()
    return args


_OPTION_DOCS = _documented_args(build_detector)


def _published(entry: ZooEntry) -> str:
    if not entry.has_weights:
        return "No published weights: an architecture for tests and experiments."
    if entry.task == "backbone":
        return f"ImageNet weights {entry.openmmlab_key}; no accuracy was published."
    aps = f"box AP {entry.box_ap}" + (f", mask AP {entry.mask_ap}" if entry.mask_ap is not None else "")
    return f"Published COCO val2017 {aps} (MMDetection's table)."


def _arg(name: str, text: str) -> str:
    return textwrap.fill(f"{name}: {text}", width=100, initial_indent="    ", subsequent_indent="        ")


def _docstring(entry: ZooEntry, summary: str) -> str:
    detector = isinstance(entry.arch, DetectorArch)
    at = "800x1216" if detector else "224x224"
    if entry.has_weights:
        enum = f"{get_model_weights(entry.name).__name__}.{member_name(entry)}"
        weights = f"``{enum}`` (= ``.DEFAULT``) or ``'DEFAULT'`` for the published weights (downloaded once, verified, "
        weights += "converted); the path of a .pth (MMDetection or wszoo) or .safetensors file; "
    else:
        weights = "The path of a .pth (MMDetection or wszoo) or .safetensors file (this entry has no published "
        weights += "weights); "
    weights += "``'hf-hub:ORG/REPO[@REVISION]'``; or None (random initialisation, no network)."
    args = [
        _arg("weights", weights),
        _arg("pretrained", "Same as ``weights='DEFAULT'``; with any other explicit ``weights`` it is an error."),
        _arg("progress", "Show a download progress bar."),
    ]
    if detector:
        args.append(
            _arg("num_classes", "Classes including background (default 81 for COCO, or the trained weights' own).")
        )
        args += [_arg(p.name, f"{_OPTION_DOCS.get(p.name, '')} Default {p.default!r}.") for p in DETECTOR_OPTIONS]
        returns = "A :class:`~wszoo.modeling.detector.WSRCNN` (torchvision's detection API)"
    else:
        args.append(_arg("num_classes", "ImageNet classifier size (default: none, or the checkpoint's classifier)."))
        returns = "A :class:`~wszoo.modeling.backbone.ResNet`"
    facts = f"{_published(entry)} {entry.num_params / 1e6:.1f}M parameters, {entry.gflops} GFLOPs at {at} "
    facts += "(``tools/model_stats.py``)."
    return (
        "\n".join(
            [
                summary.strip(),
                "",
                textwrap.fill(facts, width=100),
                "",
                "Args:",
                *args,
                "",
                "Returns:",
                f"    {returns} with ``.weights`` (the weights enum member it was built from, or None),",
                "    ``.meta`` (see :mod:`wszoo.meta`) and ``.pretrained_cfg`` (timm's).",
            ]
        )
        + "\n"
    )


def _zoo_builder(fn: Callable) -> Callable:
    """Makes ``fn`` (a typed stub named after a zoo entry, with a one-line docstring) its builder."""
    entry = get_entry(fn.__name__)
    declared = [p.name for p in inspect.signature(fn).parameters.values()]
    detector = isinstance(entry.arch, DetectorArch)
    expected = [p.name for p in _BASE] + (["detector_options"] if detector else [])
    if declared != expected:
        raise TypeError(f"builder {fn.__name__} declares {declared}, expected {expected}")

    @functools.wraps(fn)
    def builder(**kwargs: Any) -> nn.Module:
        return _build(entry.name, **kwargs)

    builder.__signature__ = _DETECTOR_SIGNATURE if detector else _BACKBONE_SIGNATURE
    builder.__doc__ = _docstring(entry, fn.__doc__ or "")
    return builder


# ---- the factory ----


def _check_arguments(entry: ZooEntry, kwargs: dict[str, Any]) -> None:
    """Refuses arguments the entry's builder does not take, naming the builder and the valid ones."""
    signature = _DETECTOR_SIGNATURE if isinstance(entry.arch, DetectorArch) else _BACKBONE_SIGNATURE
    unknown = sorted(set(kwargs) - set(signature.parameters))
    if unknown:
        valid = ", ".join(signature.parameters)
        raise TypeError(f"{entry.name}() got unexpected keyword arguments {unknown}; it takes {valid}")


def _build(
    name: str,
    *,
    weights: WeightsArg = _NOT_GIVEN,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **kwargs: Any,
) -> nn.Module:
    """Builds zoo entry ``name``, loading ``weights`` strictly if given.

    Args:
        name: Zoo name or alias.
        weights: None (random init), ``"DEFAULT"`` or a weights enum member (published weights),
            a zoo entry, the path of a ``.pth`` (MMDetection or wszoo layout) or ``.safetensors``
            file, or ``"hf-hub:ORG/REPO[@REVISION]"``. Weights written by ``wszoo train`` bring
            their class count and build options (image scale, test settings; see
            :mod:`wszoo.model_spec`): ``num_classes`` may be left out, options given here win,
            and ``name`` must have their architecture.
        pretrained: Same as ``weights="DEFAULT"`` (torch.hub habit); an explicit ``weights``
            that is not the default (None included) contradicts it.
        progress: Show a download progress bar.
        num_classes: Classes including background (detectors; default 81 for COCO), or the
            classifier size of a backbone (default: none, or the checkpoint's).
        **kwargs: Passed to :func:`wszoo.modeling.detector.build_detector` (e.g. ``score_thresh``,
            ``trainable_backbone_layers``, ``resize_backend``, ``image_scale``).
    """
    entry = get_entry(name)
    _check_arguments(entry, {"weights": weights, "num_classes": num_classes, **kwargs})
    if weights is _NOT_GIVEN:
        weights = None
    elif pretrained and not means_default(entry, weights):
        raise ValueError(
            "pass either pretrained=True or weights=..., not both: pretrained=True means weights='DEFAULT', "
            f"and weights={_shown(weights)} was given"
        )
    resolved = resolve_weights(entry, weights, pretrained=pretrained)
    if isinstance(entry.arch, DetectorArch):
        model, classes = _detector(entry, resolved, progress=progress, num_classes=num_classes, **kwargs)
    else:
        model, classes = _backbone(entry, resolved, progress=progress, num_classes=num_classes), None
    return _describe(model, entry, resolved, source=weights, classes=classes)


def _shown(weights: WeightsArg) -> str:
    return repr(weights) if isinstance(weights, (WeightsEnum, type(None))) else repr(str(weights))


def _describe(model: nn.Module, entry: ZooEntry, resolved, *, source: WeightsArg, classes) -> nn.Module:
    """Sets ``model.weights``, ``model.meta`` and ``model.pretrained_cfg`` (see the README)."""
    num_classes = _num_classes(model)
    if isinstance(resolved, ZooEntry):  # the published weights
        model.weights = get_model_weights(resolved.name)[member_name(resolved)]
        # A copy: editing model.meta must not edit the weights' meta, shared by every later build.
        model.meta = {**copy.deepcopy(model.weights.meta), "num_params": sum(p.numel() for p in model.parameters())}
        cfg = pretrained_cfg(resolved, num_classes=num_classes, tag=model.weights.name.lower())
    else:
        model.weights = None
        shown = None if source is None else (source if isinstance(source, str) else str(source))
        model.meta = built_meta(
            entry, num_params=sum(p.numel() for p in model.parameters()), num_classes=num_classes, classes=classes
        )
        model.meta["weights"] = shown
        cfg = pretrained_cfg(entry, num_classes=num_classes)
        if isinstance(resolved, HubWeights):
            cfg["hf_hub_id"] = resolved.repo_id
        elif resolved is not None:
            cfg["file"] = str(resolved)
    model.pretrained_cfg = cfg
    return model


def _num_classes(model: nn.Module) -> Optional[int]:
    if isinstance(model, WSRCNN):
        return model.roi_heads.box_predictor.cls_score.out_features
    return model.num_classes


def _check_options(kwargs: dict[str, Any]) -> None:
    """Refuses build options out of range before anything is built, naming the range."""
    scale = kwargs.get("image_scale")
    if scale is not None and (
        len(tuple(scale)) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in scale)
    ):
        raise ValueError(f"image_scale must be two integers >= 1 (long side, short side), got {scale!r}")
    for name in ("score_thresh", "nms_thresh"):
        value = kwargs.get(name)
        if value is not None and not 0.0 <= value <= 1.0:  # also refuses NaN
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    for name in ("detections_per_img", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "box_batch_size_per_image"):
        value = kwargs.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _detector(
    entry: ZooEntry, resolved, *, progress: bool, num_classes: Optional[int], **kwargs: Any
) -> tuple[WSRCNN, Optional[list[str]]]:
    """The detector and, when trained weights record them, their class names."""
    file = weights_file(entry, resolved)  # a Hub repository is downloaded once, here
    spec = read_spec(file) if file is not None else None
    if spec is not None:  # written by `wszoo train`: its classes and build options, unless given
        check_spec(entry, spec, what=str(file), num_classes=num_classes)
        num_classes, kwargs = spec["num_classes"], {**spec_build_kwargs(spec), **kwargs}
    if file is not None:
        resolved = file
    _check_options(kwargs)
    if isinstance(resolved, ZooEntry) and num_classes not in (None, entry.num_classes):
        raise ValueError(
            f"{entry.name}'s published weights have {entry.num_classes} classes (with background), "
            f"num_classes={num_classes} was given; to fine-tune on other classes see wszoo.training.finetune "
            "(or `wszoo train --weights DEFAULT`)"
        )
    num_classes = num_classes or entry.num_classes or 81
    classes = spec.get("classes") if spec is not None else None
    if resolved is None:
        return build_detector(arch=entry.arch, num_classes=num_classes, **kwargs), classes
    state_dict = load_state_dict(entry, resolved, num_classes=num_classes, progress=progress)
    # Weights are about to replace every parameter: build on the meta device (no random
    # initialisation, no memory), then adopt the loaded tensors with assign=True. The parameters
    # keep their requires_grad (frozen stages stay frozen).
    with torch.device("meta"):
        model = build_detector(arch=entry.arch, num_classes=num_classes, **kwargs)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.transform.reset_buffers()  # not in the state dict
    return model, classes


def _backbone(entry: ZooEntry, resolved, *, progress: bool, num_classes: Optional[int]) -> nn.Module:
    state_dict = load_state_dict(entry, resolved, progress=progress) if resolved is not None else None
    if state_dict is not None and num_classes is None and "fc.weight" in state_dict:
        num_classes = state_dict["fc.weight"].shape[0]  # keep the checkpoint's ImageNet classifier
    model = build_resnet(arch=entry.arch, num_classes=num_classes)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True, assign=True)
    return model


# ---- the builders: typed stubs; _zoo_builder gives each its body, signature and docstring ----


@_zoo_builder
def faster_rcnn_r50_fpn_gn_ws_all_1x_coco(
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **detector_options: Any,
) -> WSRCNN:
    """Faster R-CNN R-50-FPN GN+WS, 1x."""


@_zoo_builder
def faster_rcnn_r101_fpn_gn_ws_all_1x_coco(
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **detector_options: Any,
) -> WSRCNN:
    """Faster R-CNN R-101-FPN GN+WS, 1x."""


@_zoo_builder
def faster_rcnn_x50_32x4d_fpn_gn_ws_all_1x_coco(
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **detector_options: Any,
) -> WSRCNN:
    """Faster R-CNN X-50-32x4d-FPN GN+WS, 1x."""


@_zoo_builder
def faster_rcnn_x101_32x4d_fpn_gn_ws_all_1x_coco(
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **detector_options: Any,
) -> WSRCNN:
    """Faster R-CNN X-101-32x4d-FPN GN+WS, 1x."""


@_zoo_builder
def mask_rcnn_r50_fpn_gn_ws_all_2x_coco(
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **detector_options: Any,
) -> WSRCNN:
    """Mask R-CNN R-50-FPN GN+WS, 2x."""


@_zoo_builder
def mask_rcnn_r101_fpn_gn_ws_all_2x_coco(
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **detector_options: Any,
) -> WSRCNN:
    """Mask R-CNN R-101-FPN GN+WS, 2x."""


@_zoo_builder
def mask_rcnn_x50_32x4d_fpn_gn_ws_all_2x_coco(
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **detector_options: Any,
) -> WSRCNN:
    """Mask R-CNN X-50-32x4d-FPN GN+WS, 2x."""


@_zoo_builder
def mask_rcnn_x101_32x4d_fpn_gn_ws_all_2x_coco(
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **detector_options: Any,
) -> WSRCNN:
    """Mask R-CNN X-101-32x4d-FPN GN+WS, 2x."""


@_zoo_builder
def mask_rcnn_r50_fpn_gn_ws_all_20_23_24e_coco(
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **detector_options: Any,
) -> WSRCNN:
    """Mask R-CNN R-50-FPN GN+WS, 20-23-24e."""


@_zoo_builder
def mask_rcnn_r101_fpn_gn_ws_all_20_23_24e_coco(
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **detector_options: Any,
) -> WSRCNN:
    """Mask R-CNN R-101-FPN GN+WS, 20-23-24e."""


@_zoo_builder
def mask_rcnn_x50_32x4d_fpn_gn_ws_all_20_23_24e_coco(
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **detector_options: Any,
) -> WSRCNN:
    """Mask R-CNN X-50-32x4d-FPN GN+WS, 20-23-24e."""


@_zoo_builder
def mask_rcnn_x101_32x4d_fpn_gn_ws_all_20_23_24e_coco(
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **detector_options: Any,
) -> WSRCNN:
    """Mask R-CNN X-101-32x4d-FPN GN+WS, 20-23-24e."""


@_zoo_builder
def resnet50_gn_ws(
    *, weights: WeightsArg = None, pretrained: bool = False, progress: bool = True, num_classes: Optional[int] = None
) -> ResNet:
    """ImageNet R-50 with GN+WS (open-mmlab://jhu/resnet50_gn_ws)."""


@_zoo_builder
def resnet101_gn_ws(
    *, weights: WeightsArg = None, pretrained: bool = False, progress: bool = True, num_classes: Optional[int] = None
) -> ResNet:
    """ImageNet R-101 with GN+WS (open-mmlab://jhu/resnet101_gn_ws)."""


@_zoo_builder
def resnext50_32x4d_gn_ws(
    *, weights: WeightsArg = None, pretrained: bool = False, progress: bool = True, num_classes: Optional[int] = None
) -> ResNet:
    """ImageNet X-50-32x4d with GN+WS (open-mmlab://jhu/resnext50_32x4d_gn_ws)."""


@_zoo_builder
def resnext101_32x4d_gn_ws(
    *, weights: WeightsArg = None, pretrained: bool = False, progress: bool = True, num_classes: Optional[int] = None
) -> ResNet:
    """ImageNet X-101-32x4d with GN+WS (open-mmlab://jhu/resnext101_32x4d_gn_ws)."""


@_zoo_builder
def resnext50_32x4d_gn(
    *, weights: WeightsArg = None, pretrained: bool = False, progress: bool = True, num_classes: Optional[int] = None
) -> ResNet:
    """ImageNet X-50-32x4d with GN (open-mmlab://jhu/resnext50_32x4d_gn)."""


@_zoo_builder
def resnext101_32x4d_gn(
    *, weights: WeightsArg = None, pretrained: bool = False, progress: bool = True, num_classes: Optional[int] = None
) -> ResNet:
    """ImageNet X-101-32x4d with GN (open-mmlab://jhu/resnext101_32x4d_gn)."""


@_zoo_builder
def faster_rcnn_r18_fpn_gn_ws(
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **detector_options: Any,
) -> WSRCNN:
    """GN+WS Faster R-CNN R-18-FPN, a small architecture without published weights."""


@_zoo_builder
def mask_rcnn_r18_fpn_gn_ws(
    *,
    weights: WeightsArg = None,
    pretrained: bool = False,
    progress: bool = True,
    num_classes: Optional[int] = None,
    **detector_options: Any,
) -> WSRCNN:
    """GN+WS Mask R-CNN R-18-FPN, a small architecture without published weights."""
