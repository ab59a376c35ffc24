"""``wszoo train`` and ``wszoo eval``: argparse over :mod:`wszoo.engine` and :mod:`wszoo.evaluate`.

The functions :func:`run_train` and :func:`run_eval` are the same as a Python API, with keyword
arguments instead of a namespace.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from .engine import SCHEDULES

__all__ = ["register", "run_train", "run_eval", "build_training_model"]


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
    from . import distributed as dist_utils
    from .finetune import ClassRowsError, build_finetune_model
    from .models import build_detector
    from .registry import get_entry

    entry = get_entry(model)
    build_kwargs = dict(build_kwargs or {})
    num_classes = len(dataset_classes) + 1
    with dist_utils.main_first():  # one download / conversion per machine
        if weights is None and backbone is None:
            net = build_detector(arch=entry.arch, num_classes=num_classes, **build_kwargs)
        else:
            keep_rows = weights is not None and bool(entry.classes) and set(dataset_classes) <= set(entry.classes)
            common = dict(weights=weights, backbone=backbone, progress=progress and dist_utils.is_main(),
                          **build_kwargs)
            try:
                net, _ = build_finetune_model(entry.name, classes=list(dataset_classes) if keep_rows else None,
                                              num_classes=None if keep_rows else num_classes, **common)
            except ClassRowsError:  # e.g. your own fine-tuned weights: their rows are not COCO's
                net, _ = build_finetune_model(entry.name, num_classes=num_classes, **common)
    spec = {"name": entry.name, "num_classes": num_classes, "classes": list(dataset_classes),
            "build_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in build_kwargs.items()}}
    return net, spec


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
):
    """Trains a zoo architecture on a COCO-format dataset; returns :class:`wszoo.engine.TrainResult`.

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
        build_kwargs: Options of :func:`wszoo.models.build_detector`.
        **config: Fields of :class:`wszoo.engine.TrainConfig`.
    """
    from . import distributed as dist_utils
    from .data import CocoDataset
    from .engine import TrainConfig, train
    from .registry import get_entry

    config_ = TrainConfig(output_dir=output_dir, **config)
    dist_utils.init_from_env(config_.device)
    with_masks = get_entry(model).arch.with_mask
    dataset = CocoDataset(train_images, train_ann, train=True, with_masks=with_masks, classes=classes)
    val = None
    if val_images and val_ann:
        val = CocoDataset(val_images, val_ann, classes=dataset.classes)
    net, spec = build_training_model(model, dataset_classes=dataset.classes, weights=weights, backbone=backbone,
                                     build_kwargs=build_kwargs, progress=config_.progress)
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
    """COCO AP of a zoo model (``model`` + ``weights``) or a trained ``checkpoint`` on a dataset.

    Labels map to the dataset's categories by class name when the model knows its names (zoo
    COCO models, wszoo training outputs), else in the order of the dataset's category ids.
    """
    import torch

    from . import distributed as dist_utils
    from .data import CocoDataset
    from .engine import load_trained
    from .evaluate import evaluate

    device_ = dist_utils.init_from_env(device)
    build_kwargs = dict(build_kwargs or {})
    if checkpoint is not None:
        net, spec = load_trained(checkpoint, **build_kwargs)
        classes = spec.get("classes") or None
    elif model is not None:
        from . import get_model
        from .registry import get_entry

        with dist_utils.main_first():
            net = get_model(model, weights=weights, progress=progress and dist_utils.is_main(), **build_kwargs)
        classes = list(get_entry(model).classes) or None
    else:
        raise ValueError("give a zoo model name (with weights) or a training checkpoint")
    dataset = CocoDataset(images, ann, classes=_classes_in(classes, ann))
    expected = net.roi_heads.box_predictor.cls_score.out_features
    if dataset.num_classes != expected:
        raise ValueError(f"the model has {expected - 1} classes, the dataset {dataset.num_classes - 1} "
                         f"({dataset.classes[:5]}...); evaluate on a dataset with the model's classes")
    net.to(device_)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[amp]
    return evaluate(net, dataset, results_file=results_file, batch_size=batch_size, device=device_,
                    num_workers=num_workers, progress=progress, autocast_dtype=amp_dtype)


def _classes_in(classes: Optional[Sequence[str]], ann: str) -> Optional[list[str]]:
    """The model's class names if the dataset has all of them (then labels match by name)."""
    if not classes:
        return None
    names = {c["name"] for c in json.loads(Path(ann).read_text()).get("categories", [])}
    return list(classes) if set(classes) <= names else None


# ---- argparse ----------------------------------------------------------------------------------


def _scale(text: str) -> tuple[int, int]:
    long_side, short_side = (int(v) for v in text.lower().replace(",", "x").split("x"))
    return long_side, short_side


def _weights(text: str) -> Optional[str]:
    return None if text.lower() == "none" else text


def _build_kwargs(args) -> dict:
    out = {}
    if args.image_scale is not None:
        out["image_scale"] = args.image_scale
    for name in ("score_thresh", "box_batch_size_per_image", "rpn_post_nms_top_n_test"):
        if getattr(args, name, None) is not None:
            out[name] = getattr(args, name)
    return out


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-scale", type=_scale, help="keep-ratio resize LONGxSHORT (default 1333x800)")
    p.add_argument("--score-thresh", type=float, help="R-CNN score threshold (default 0.05)")
    p.add_argument("--rpn-post-nms-top-n-test", type=int, help="proposals at test time (default 1000)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    p.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision (GPU)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")


def _cmd_train(args) -> int:
    config = dict(
        schedule=args.schedule, epochs=args.epochs, steps=tuple(args.steps) if args.steps else None,
        batch_size=args.batch_size, lr=args.lr, warmup_iters=args.warmup_iters, grad_clip=args.grad_clip,
        amp=args.amp, num_workers=args.workers, seed=args.seed, device=args.device, log_every=args.log_every,
        checkpoint_every_iters=args.checkpoint_every, max_iters=args.max_iters, eval_every=args.eval_every,
        resume=args.resume if args.resume not in (None, "auto") else args.resume == "auto",
        progress=not args.no_progress,
    )
    kwargs = _build_kwargs(args)
    if args.box_batch_size_per_image is not None:
        kwargs["box_batch_size_per_image"] = args.box_batch_size_per_image
    result = run_train(
        train_images=args.train_images, train_ann=args.train_ann, val_images=args.val_images, val_ann=args.val_ann,
        model=args.model, output_dir=args.output_dir, weights=args.weights, backbone=args.backbone,
        classes=args.classes, build_kwargs=kwargs, **config,
    )
    from . import distributed as dist_utils

    if dist_utils.is_main():
        print(json.dumps({"global_iter": result.global_iter, "epoch": result.epoch, "finished": result.finished,
                          "checkpoint": str(result.checkpoint), "weights": str(result.weights),
                          "metrics": result.metrics}))
    return 0


def _cmd_eval(args) -> int:
    metrics = run_eval(
        images=args.images, ann=args.ann, model=args.model, weights=args.weights, checkpoint=args.checkpoint,
        results_file=args.results, batch_size=args.batch_size, device=args.device, num_workers=args.workers,
        amp=args.amp, progress=not args.no_progress, build_kwargs=_build_kwargs(args),
    )
    from . import distributed as dist_utils

    if dist_utils.is_main():
        print(json.dumps(metrics))
    return 0


def register(subparsers) -> None:
    """Adds ``train`` and ``eval`` to the ``wszoo`` command's subparsers."""
    p = subparsers.add_parser("train", help="train or fine-tune on a COCO-format dataset (torchrun for multi-GPU)")
    p.add_argument("--train-images", required=True, help="training image folder")
    p.add_argument("--train-ann", required=True, help="training instances JSON")
    p.add_argument("--val-images", help="validation image folder")
    p.add_argument("--val-ann", help="validation instances JSON")
    p.add_argument("--model", required=True, help="zoo detector name (architecture), see `wszoo list`")
    p.add_argument("--weights", type=_weights, default=None,
                   help="start from detector weights: DEFAULT (published), a file, or none (default)")
    p.add_argument("--backbone", help="start from this zoo backbone's ImageNet weights, e.g. resnet50_gn_ws")
    p.add_argument("--classes", nargs="+", help="train on these category names only (keeps their pretrained rows)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default="1x")
    p.add_argument("--epochs", type=int, help="override the schedule's epochs")
    p.add_argument("--steps", type=int, nargs="+", help="override the lr-step epochs")
    p.add_argument("--batch-size", type=int, default=2, help="images per process (default 2)")
    p.add_argument("--lr", type=float, help="default: 0.02 x total batch / 16")
    p.add_argument("--warmup-iters", type=int, default=500)
    p.add_argument("--grad-clip", type=float, help="max gradient norm (default: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--checkpoint-every", type=int, help="also checkpoint every N iterations")
    p.add_argument("--max-iters", type=int, help="stop after N iterations (resumable)")
    p.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs (0: at the end)")
    p.add_argument("--resume", nargs="?", const="auto",
                   help="resume from OUTPUT_DIR/last.pth (no value) or from the given checkpoint")
    p.add_argument("--box-batch-size-per-image", type=int, help="RoIs sampled per image (default 512)")
    _add_model_options(p)
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("eval", help="COCO box/mask AP on a COCO-format dataset (torchrun for multi-GPU)")
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--ann", required=True, help="instances JSON")
    p.add_argument("--model", help="zoo model name (with --weights)")
    p.add_argument("--weights", type=_weights, default="DEFAULT", help="DEFAULT (published) or a file")
    p.add_argument("--checkpoint", help="weights written by `wszoo train` (.safetensors or last.pth)")
    p.add_argument("--results", help="write the COCO results JSON here")
    p.add_argument("--batch-size", type=int, default=1)
    _add_model_options(p)
    p.set_defaults(func=_cmd_eval)
