"""What training writes: resumable checkpoints (``last.pth``) and weights with their model spec.

``last.pth`` holds the model, optimizer, scheduler and grad-scaler states, every rank's RNG
state and the position in the data; it is read back with ``weights_only=True``. Weights are
safetensors whose ``wszoo_spec`` metadata records how to rebuild the model (zoo name,
architecture, class count and names, build options and the test settings they imply; see
:mod:`wszoo.model_spec`), so :func:`load_trained` -- and ``wszoo.get_model(name, weights=path)``,
``wszoo predict``, ``wszoo eval`` and ``wszoo push-to-hub`` -- need nothing else.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..builders import get_model
from ..checkpoint_io import CheckpointError, load_torch_file, read_safetensors, save_safetensors
from ..model_spec import SPEC_KEY, check_spec, spec_build_kwargs, spec_from_metadata
from ..registry import get_entry
from . import distributed as dist_utils

__all__ = [
    "SPEC_KEY",
    "save_weights",
    "save_checkpoint",
    "load_checkpoint",
    "build_from_spec",
    "load_trained",
    "rng_state",
    "set_rng_state",
]


def rng_state() -> dict[str, Any]:
    """This process' torch, CUDA, Python and NumPy RNG states, as tensors and plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def plain_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict of ``model`` (unwrapped from DDP), detached, on the CPU, contiguous."""
    model = getattr(model, "module", model)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: Union[str, Path], *, spec: Optional[dict] = None) -> Path:
    """Writes the model's weights as safetensors, with ``spec`` (how to rebuild it) as metadata."""
    path = Path(path)
    save_safetensors(plain_state_dict(model), path, metadata={SPEC_KEY: json.dumps(spec or {})})
    return path


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Writes a resumable checkpoint: every rank contributes its RNG state; rank 0 writes atomically."""
    rng = dist_utils.all_gather_object(rng_state())
    if dist_utils.is_main():
        tmp = path.with_name(path.name + ".tmp")
        torch.save({**state, "rng": rng}, tmp)
        os.replace(tmp, path)
    dist_utils.barrier()


def load_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, read without executing pickled code."""
    checkpoint = load_torch_file(path)
    if not isinstance(checkpoint, dict) or not {"model", "optimizer", "epoch"} <= checkpoint.keys():
        raise CheckpointError(f"{path} is not a wszoo training checkpoint (last.pth written by `wszoo train`)")
    return checkpoint


def build_from_spec(spec: dict, **overrides: Any) -> nn.Module:
    """Rebuilds a detector from the spec stored with trained weights (no weights loaded)."""
    kwargs = {**spec_build_kwargs(spec), **overrides}
    return get_model(spec["name"], num_classes=spec["num_classes"], **kwargs)


def load_trained(path: Union[str, Path], *, model: Optional[str] = None, **overrides: Any) -> tuple[nn.Module, dict]:
    """A detector and its spec from weights written by training (``.safetensors`` or ``last.pth``).

    Args:
        path: ``epoch_<n>.safetensors``, ``final.safetensors`` or a ``last.pth`` checkpoint.
        model: A zoo name the weights are expected to be (checked: same architecture).
        **overrides: Build options to change (e.g. ``score_thresh``, ``image_scale``).

    Raises:
        SpecMismatchError: ``model`` has another architecture than the weights.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        state_dict, metadata = read_safetensors(path)
        spec = spec_from_metadata(metadata, what=str(path)) or {}
    else:
        checkpoint = load_checkpoint(path)
        spec, state_dict = checkpoint.get("model_spec") or {}, checkpoint["model"]
    if not spec.get("name"):
        raise ValueError(
            f"{path} carries no model spec (it was not written by wszoo's training); build the "
            "model with wszoo.get_model(name, weights=path, num_classes=...) instead"
        )
    if model is not None:
        check_spec(get_entry(model), spec, what=str(path))
    model = build_from_spec(spec, **overrides)
    model.load_state_dict(state_dict, strict=True)
    return model, spec
