"""wszoo: MMDetection's GN+WS (Weight Standardization) detectors as native torchvision models.

    >>> import wszoo
    >>> wszoo.list_models("mask_rcnn_*")[:1]
    ['mask_rcnn_r50_fpn_gn_ws_all_2x_coco']
    >>> model = wszoo.get_model("mask_rcnn_r50_fpn_gn_ws_all_2x_coco", weights="DEFAULT")  # doctest: +SKIP

Subpackages, data flowing one way (each imports only those above it):

* the zoo table and its value types: :mod:`wszoo.zoo`, :mod:`wszoo.arch`, :mod:`wszoo.coco`,
  :mod:`wszoo.registry`, :mod:`wszoo.settings`;
* :mod:`wszoo.modeling`: layers, backbone, anchors, RPN, RoI heads, box ops, transforms, detector;
* :mod:`wszoo.checkpoint_io` and :mod:`wszoo.conversion`: safe checkpoint files; MMDetection keys
  to ours; :mod:`wszoo.model_spec`: what weights written by training record about themselves;
* :mod:`wszoo.meta`: an entry's metadata as data (``Weights.meta``, ``pretrained_cfg``);
* :mod:`wszoo.hub`: what ``weights=`` means, weights objects (:mod:`wszoo.hub.pretrained`),
  verified downloads, the Hugging Face Hub;
* :mod:`wszoo.builders`: one builder per zoo entry;
* :mod:`wszoo.training`, :mod:`wszoo.inference` (:class:`Predictor`) and :mod:`wszoo.export`: what users
  do with built models;
* :mod:`wszoo.cli`: the ``wszoo`` command.
"""

from __future__ import annotations

from . import _deprecated, builders
from ._version import __version__
from .builders import *  # noqa: F403 - one builder per zoo entry
from .builders import get_model, get_model_info, get_model_meta
from .coco import COCO_CATEGORY_IDS, COCO_CLASSES
from .export import export_onnx
from .hub.pretrained import Weights, WeightsEnum, get_model_weights, get_weight
from .inference.predictor import Predictor
from .registry import UnknownModelError, get_entry, list_models
from .settings import DEFAULT_SETTINGS, InferenceSettings
from .zoo import ENTRIES, ZooEntry

_deprecated.install()

__all__ = [
    "COCO_CATEGORY_IDS",
    "COCO_CLASSES",
    "DEFAULT_SETTINGS",
    "ENTRIES",
    "InferenceSettings",
    "Predictor",
    "UnknownModelError",
    "Weights",
    "WeightsEnum",
    "ZooEntry",
    "export_onnx",
    "get_entry",
    "get_model",
    "get_model_info",
    "get_model_meta",
    "get_model_weights",
    "get_weight",
    "list_models",
    "__version__",
    *builders.__all__,
]
