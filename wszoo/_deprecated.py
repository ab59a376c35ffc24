"""Old import paths of wszoo 0.1 (one flat package), kept for one release with a DeprecationWarning.

``from wszoo.layers import WSConv2d`` still works: a finder at the end of ``sys.meta_path``
answers for the old module names (no file of that name exists any more) with a module whose
attributes are looked up in the new modules, warning once per name on first use. Remove in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any, Optional, Sequence

__all__ = ["MOVED", "install"]

# old module -> the modules its public names now live in, searched in order.
MOVED: dict[str, tuple[str, ...]] = {
    "wszoo.layers": ("wszoo.modeling.layers",),
    "wszoo.backbone": ("wszoo.modeling.backbone",),
    "wszoo.box_ops": ("wszoo.modeling.box_ops",),
    "wszoo.transforms": ("wszoo.modeling.transforms",),
    "wszoo.models": ("wszoo.modeling.detector",),
    "wszoo.heads": (
        "wszoo.modeling.anchors",
        "wszoo.modeling.matcher",
        "wszoo.modeling.rpn",
        "wszoo.modeling.roi_heads",
        "wszoo.modeling.losses",
    ),
    "wszoo.download": ("wszoo.hub.download", "wszoo.checkpoint_io"),
    "wszoo.weights": ("wszoo.hub.weights",),
    "wszoo.hf_hub": ("wszoo.hub.hf_load", "wszoo.hub.hf_publish"),
    "wszoo.data": ("wszoo.training.data",),
    "wszoo.engine": ("wszoo.training.engine", "wszoo.training.checkpoints"),
    "wszoo.evaluate": ("wszoo.training.evaluate",),
    "wszoo.finetune": ("wszoo.training.finetune",),
    "wszoo.distributed": ("wszoo.training.distributed",),
    "wszoo.predict": ("wszoo.inference.predict",),
    "wszoo.train_cli": ("wszoo.training.api", "wszoo.cli.train"),
    "wszoo.predict_cli": ("wszoo.cli.predict",),
    "wszoo.conversion.checkpoint": ("wszoo.checkpoint_io", "wszoo.conversion.recognize"),
}


class _MovedModule(types.ModuleType):
    """Stands for an old module: attribute lookups go to the new modules, with a warning."""

    def __init__(self, name: str, targets: Sequence[str]) -> None:
        super().__init__(name, f"Deprecated alias of {', '.join(targets)}.")
        self._wszoo_targets = tuple(targets)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr != "__all__":
            raise AttributeError(attr)
        for target in self._wszoo_targets:
            module = importlib.import_module(target)
            if attr == "__all__":
                continue
            if hasattr(module, attr):
                warnings.warn(
                    f"{self.__name__}.{attr} moved to {target}.{attr}; the old path is deprecated and will be "
                    "removed in wszoo 0.3",
                    DeprecationWarning,
                    stacklevel=2,
                )
                return getattr(module, attr)
        if attr == "__all__":
            return [n for t in self._wszoo_targets for n in getattr(importlib.import_module(t), "__all__", [])]
        raise AttributeError(
            f"module {self.__name__!r} (deprecated; now {', '.join(self._wszoo_targets)}) has no attribute {attr!r}"
        )

    def __dir__(self) -> list[str]:
        return sorted({n for t in self._wszoo_targets for n in dir(importlib.import_module(t))})


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None, target: Any = None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _MovedModule(spec.name, MOVED[spec.name])

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install() -> None:
    """Appends the finder of old module names to ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
