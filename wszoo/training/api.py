"""Training and evaluation as two library calls: what ``wszoo train`` and ``wszoo eval`` run.

:func:`run_train` and :func:`run_eval` take the commands' options as keyword arguments; the CLI
(:mod:`wszoo.cli.train`) only parses arguments and calls them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..builders import get_model
from ..hub.weights import trained_weights
from ..model_spec import check_spec, make_spec, read_spec
from ..modeling.detector import build_detector
from ..registry import get_entry
from . import distributed as dist_utils
from .checkpoints import load_trained
from .data import CocoDataset
from .engine import TrainConfig, TrainResult, seed_everything, train
from .evaluate import evaluate
from .finetune import ClassRowsError, build_finetune_model

__all__ = ["run_train", "run_eval", "build_training_model"]


def build_training_model(
    model: str,
    *,
    dataset_classes: Sequence[str],
    weights: Optional[str] = "DEFAULT",
    backbone: Optional[str] = None,
    build_kwargs: Optional[dict] = None,
    progress: bool = True,
):
    """The model to train on a dataset with ``dataset_classes``, and its spec.

    With detector weights, source classes whose names are all among the model's keep their
    pretrained rows (a COCO subset, by name); otherwise class layers are re-initialised.
    ``weights=None`` with ``backbone`` starts from ImageNet backbone weights; both None: random.
    """

    entry = get_entry(model)
    build_kwargs = dict(build_kwargs or {})
    num_classes = len(dataset_classes) + 1
    with dist_utils.main_first():  # one download / conversion per machine
        if weights is not None:  # weights written by `wszoo train`: of this architecture only
            weights, source_spec = trained_weights(entry, weights)
            if source_spec is not None:
                check_spec(entry, source_spec, what=str(weights))
        if weights is None and backbone is None:
            net = build_detector(arch=entry.arch, num_classes=num_classes, **build_kwargs)
        else:
            keep_rows = weights is not None and bool(entry.classes) and set(dataset_classes) <= set(entry.classes)
            common = dict(
                weights=weights, backbone=backbone, progress=progress and dist_utils.is_main(), **build_kwargs
            )
            try:
                net, _ = build_finetune_model(
                    entry.name,
                    classes=list(dataset_classes) if keep_rows else None,
                    num_classes=None if keep_rows else num_classes,
                    **common,
                )
            except ClassRowsError:  # e.g. your own fine-tuned weights: their rows are not COCO's
                net, _ = build_finetune_model(entry.name, num_classes=num_classes, **common)
    return net, make_spec(entry.name, num_classes=num_classes, classes=dataset_classes, build_kwargs=build_kwargs)


def run_train(
    *,
    train_images: str,
    train_ann: str,
    model: str,
    output_dir: str,
    val_images: Optional[str] = None,
    val_ann: Optional[str] = None,
    weights: Optional[str] = None,
    backbone: Optional[str] = None,
    classes: Optional[Sequence[str]] = None,
    build_kwargs: Optional[dict] = None,
    **config: Any,
) -> TrainResult:
    """Trains a zoo architecture on a COCO-format dataset; returns :class:`wszoo.training.engine.TrainResult`.

    Args:
        train_images: Training image folder.
        train_ann: Training instances JSON.
        model: Zoo detector name (the architecture).
        output_dir: Checkpoints, weights, ``log.jsonl``, results JSONs.
        val_images: Validation image folder (optional).
        val_ann: Validation instances JSON (optional).
        weights: Start from these detector weights (``"DEFAULT"``: the published ones; a file).
        backbone: Or from this zoo backbone's ImageNet weights (with ``weights=None``).
        classes: Train on these category names only (default: all of the dataset's).
        build_kwargs: Options of :func:`wszoo.modeling.detector.build_detector`.
        **config: Fields of :class:`wszoo.training.engine.TrainConfig` (validated before anything runs).

    The same arguments (``seed`` included) give the same weights: the seed is set before the
    model is built.
    """

    config_ = TrainConfig(output_dir=output_dir, **config)
    dist_utils.init_from_env(config_.device)
    with_masks = get_entry(model).arch.with_mask
    dataset = CocoDataset(train_images, train_ann, train=True, with_masks=with_masks, classes=classes)
    val = None
    if val_images and val_ann:
        val = CocoDataset(val_images, val_ann, classes=dataset.classes)
    seed_everything(config_.seed)  # before the model's random initialisation: the same seed, the same run
    net, spec = build_training_model(
        model,
        dataset_classes=dataset.classes,
        weights=weights,
        backbone=backbone,
        build_kwargs=build_kwargs,
        progress=config_.progress,
    )
    return train(net, dataset, config_, val_dataset=val, model_spec=spec)


def run_eval(
    *,
    images: str,
    ann: str,
    model: Optional[str] = None,
    weights: Optional[str] = "DEFAULT",
    checkpoint: Optional[str] = None,
    results_file: Optional[str] = None,
    batch_size: int = 1,
    device: str = "auto",
    num_workers: int = 2,
    amp: Optional[str] = None,
    progress: bool = True,
    build_kwargs: Optional[dict] = None,
) -> dict[str, dict[str, float]]:
    """COCO AP of a zoo model (``model`` + ``weights``) or of trained weights on a dataset.

    Weights written by ``wszoo train`` (``checkpoint``, or ``weights`` with their ``.safetensors``)
    are built as they were trained -- architecture, classes, image scale, test settings -- and
    ``model`` may be left out; when given, it must have their architecture. ``build_kwargs``
    (explicit options) win over what the weights record. Labels map to the dataset's categories
    by class name when the model knows its names (zoo COCO models, wszoo training outputs), else
    in the order of the dataset's category ids.
    """

    device_ = dist_utils.init_from_env(device)
    # COCO's mask AP needs only binary masks: MMDetection's bool masks are the cheapest form.
    build_kwargs = {"mask_format": "bool", **(build_kwargs or {})}
    if checkpoint is not None and not str(checkpoint).endswith(".safetensors"):  # a resumable last.pth
        net, spec = load_trained(checkpoint, model=model, **build_kwargs)
        classes = spec.get("classes") or None
    else:
        if checkpoint is not None:
            weights = checkpoint
        if model is None:
            spec = read_spec(weights) if weights not in (None, "DEFAULT") and Path(weights).is_file() else None
            if spec is None:
                given = (
                    "no weights file was given" if weights in (None, "DEFAULT") else f"{weights} records no model spec"
                )
                raise ValueError(
                    "give a zoo model name (--model, with --weights) or weights written by `wszoo train` "
                    f"(--checkpoint or --weights); {given}"
                )
            model = spec["name"]
        with dist_utils.main_first():  # one download per machine
            weights, spec = trained_weights(get_entry(model), weights)
            net = get_model(model, weights=weights, progress=progress and dist_utils.is_main(), **build_kwargs)
        classes = (spec.get("classes") if spec else list(get_entry(model).classes)) or None
    dataset = CocoDataset(images, ann, classes=_classes_in(classes, ann))
    expected = net.roi_heads.box_predictor.cls_score.out_features
    if dataset.num_classes != expected:
        raise ValueError(
            f"the model has {expected - 1} classes, the dataset {dataset.num_classes - 1} "
            f"({dataset.classes[:5]}...); evaluate on a dataset with the model's classes"
        )
    net.to(device_)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[amp]
    return evaluate(
        net,
        dataset,
        results_file=results_file,
        batch_size=batch_size,
        device=device_,
        num_workers=num_workers,
        progress=progress,
        autocast_dtype=amp_dtype,
    )


def _classes_in(classes: Optional[Sequence[str]], ann: str) -> Optional[list[str]]:
    """The model's class names if the dataset has all of them (then labels match by name)."""
    if not classes:
        return None
    names = {c["name"] for c in json.loads(Path(ann).read_text()).get("categories", [])}
    return list(classes) if set(classes) <= names else None
