"""The model spec that weights written by ``wszoo train`` carry: how to rebuild and run them.

A spec is a JSON object stored under :data:`SPEC_KEY` in the safetensors metadata (and as
``model_spec`` in ``last.pth``)::

    {"name": "faster_rcnn_r18_fpn_gn_ws",        # the zoo architecture
     "arch": {"depth": 18, ...},                  # its DetectorArch, for readers without the zoo
     "num_classes": 4, "classes": ["a", "b", "c"],
     "build_kwargs": {"image_scale": [80, 64]},  # build_detector options the model was trained with
     "settings": {...}}                           # the resulting InferenceSettings (informative)

``build_kwargs`` is what rebuilds the model; ``settings`` spells out the test-time settings it
implies. :func:`wszoo.get_model` with such weights, ``wszoo predict``, ``wszoo eval`` and
``wszoo push-to-hub`` read the spec, so trained weights run at the scale and with the classes
they were trained with; options given explicitly still win.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Optional, Sequence

from .arch import DetectorArch
from .checkpoint_io import CheckpointError, read_safetensors_metadata
from .registry import UnknownModelError, get_entry
from .settings import DEFAULT_SETTINGS, InferenceSettings
from .zoo import ZooEntry

__all__ = [
    "SPEC_KEY",
    "SpecMismatchError",
    "make_spec",
    "spec_from_metadata",
    "read_spec",
    "spec_build_kwargs",
    "spec_settings",
    "check_spec",
]

# The safetensors metadata entry holding the model spec.
SPEC_KEY = "wszoo_spec"

# build_detector options and the InferenceSettings field each one sets.
_SETTING_OF_OPTION = {
    "image_scale": "image_scale",
    "score_thresh": "score_thresh",
    "nms_thresh": "nms_thresh",
    "detections_per_img": "detections_per_img",
    "rpn_pre_nms_top_n_test": "rpn_pre_nms_top_n",
    "rpn_post_nms_top_n_test": "rpn_post_nms_top_n",
}


class SpecMismatchError(ValueError):
    """Trained weights were asked to be built as another architecture or class count."""


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def make_spec(
    name: str, *, num_classes: int, classes: Sequence[str] = (), build_kwargs: Optional[Mapping[str, Any]] = None
) -> dict[str, Any]:
    """The spec of a detector built as ``get_model(name, num_classes=..., **build_kwargs)``."""
    entry = get_entry(name)
    options = {k: _jsonable(v) for k, v in (build_kwargs or {}).items()}
    spec = {
        "name": entry.name,
        "arch": dataclasses.asdict(entry.arch),
        "num_classes": int(num_classes),
        "classes": list(classes),
        "build_kwargs": options,
    }
    spec["settings"] = spec_settings(spec).to_dict()
    return spec


def spec_from_metadata(metadata: Mapping[str, str], *, what: str = "the weights") -> Optional[dict[str, Any]]:
    """The spec recorded in safetensors ``metadata``, or None when there is none."""
    text = metadata.get(SPEC_KEY)
    if not text:
        return None
    try:
        spec = json.loads(text)
    except ValueError:
        raise CheckpointError(f"{what}: its {SPEC_KEY} metadata is not valid JSON") from None
    if not isinstance(spec, dict) or not spec.get("name"):
        return None  # e.g. "{}": weights saved without a spec
    if not isinstance(spec.get("num_classes"), int):
        raise CheckpointError(f"{what}: its {SPEC_KEY} metadata has no integer num_classes")
    return spec


def read_spec(path: os.PathLike | str) -> Optional[dict[str, Any]]:
    """The spec of a ``.safetensors`` weights file (its metadata only), or None (none recorded,
    or not a safetensors file)."""
    if not str(path).endswith(".safetensors"):
        return None
    return spec_from_metadata(read_safetensors_metadata(path), what=str(path))


def spec_build_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The ``build_detector`` options of a spec (JSON lists back to tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in (spec.get("build_kwargs") or {}).items()}


def spec_settings(spec: Optional[Mapping[str, Any]]) -> InferenceSettings:
    """The test-time settings trained weights run with (the defaults where the spec says nothing)."""
    if not spec:
        return DEFAULT_SETTINGS
    options = spec_build_kwargs(spec)
    changes = {field: options[option] for option, field in _SETTING_OF_OPTION.items() if option in options}
    return dataclasses.replace(DEFAULT_SETTINGS, **changes)


def check_spec(entry: ZooEntry, spec: Mapping[str, Any], *, what: str, num_classes: Optional[int] = None) -> None:
    """Refuses to build trained weights as another architecture, or with another class count.

    Raises:
        SpecMismatchError: Naming what the weights are and what to build instead.
    """
    name = spec["name"]
    try:
        arch = get_entry(name).arch
    except UnknownModelError:
        recorded = spec.get("arch")
        try:
            arch = DetectorArch(**recorded) if isinstance(recorded, dict) else None
        except TypeError:  # written by another wszoo: the strict load decides
            arch = None
    if arch is not None and arch != entry.arch:
        raise SpecMismatchError(
            f"{what} holds weights of {name} ({arch}), trained with `wszoo train`; they do not fit "
            f"{entry.name} ({entry.arch}). Name {name} instead"
        )
    if num_classes is not None and num_classes != spec["num_classes"]:
        raise SpecMismatchError(
            f"{what} has {spec['num_classes']} classes (with background), num_classes={num_classes} was given; "
            "leave num_classes out (the weights record it), or fine-tune them with wszoo.training.finetune"
        )
