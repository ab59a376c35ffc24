"""``wszoo train`` and ``wszoo eval``: argparse over :mod:`wszoo.training.api`.

Numeric options are checked by argparse (an error giving the valid range, before anything
runs); both commands print the COCO metrics as a table, or as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
from typing import Optional

import torch

from ..inference.allocator import retain_freed_memory
from ..training import distributed as dist_utils
from ..training.api import run_eval, run_train
from ..training.engine import SCHEDULES
from ..training.evaluate import format_metrics
from .arguments import (
    DeprecatedAlias,
    HelpFormatter,
    add_output_options,
    image_scale,
    non_negative_int,
    positive_int,
    probability,
    say,
    show_progress,
)

__all__ = ["register"]


def _int_at_least(low: int):
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _seed(text: str) -> int:
    value = _int_at_least(0)(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..2**32-1, got {value}")
    return value


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
    p.add_argument(
        "--image-scale",
        type=image_scale,
        metavar="LONGxSHORT",
        help="keep-ratio resize, e.g. 1333x800 (default: the one trained weights record, else 1333x800)",
    )
    p.add_argument(
        "--score-threshold",
        dest="score_thresh",
        type=probability,
        metavar="THRESHOLD",
        help="keep detections scoring above this, in [0, 1] (default: the model's, 0.05, as MMDetection tests)",
    )
    p.add_argument(
        "--score-thresh", dest="score_thresh", type=probability, action=DeprecatedAlias, new="--score-threshold"
    )
    p.add_argument("--rpn-post-nms-top-n-test", type=positive_int, help="proposals at test time (default 1000)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu or cuda")
    p.add_argument("--workers", type=non_negative_int, default=2, help="DataLoader workers per process, >= 0")
    p.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision (GPU)")
    add_output_options(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object instead of a table")


def _cmd_train(args) -> int:
    config = dict(
        schedule=args.schedule,
        epochs=args.epochs,
        steps=tuple(args.steps) if args.steps else None,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_iters=args.warmup_iters,
        grad_clip=args.grad_clip,
        amp=args.amp,
        num_workers=args.workers,
        seed=args.seed,
        device=args.device,
        log_every=args.log_every,
        checkpoint_every_iters=args.checkpoint_every,
        max_iters=args.max_iters,
        eval_every=args.eval_every,
        keep_checkpoints=args.keep_checkpoints,
        resume=args.resume if args.resume not in (None, "auto") else args.resume == "auto",
        progress=show_progress(args),
    )
    kwargs = _build_kwargs(args)
    if args.box_batch_size_per_image is not None:
        kwargs["box_batch_size_per_image"] = args.box_batch_size_per_image
    result = run_train(
        train_images=args.train_images,
        train_ann=args.train_ann,
        val_images=args.val_images,
        val_ann=args.val_ann,
        model=args.model,
        output_dir=args.output_dir,
        weights=args.weights,
        backbone=args.backbone,
        classes=args.classes,
        build_kwargs=kwargs,
        **config,
    )

    if dist_utils.is_main():
        summary = {
            "global_iter": result.global_iter,
            "epoch": result.epoch,
            "finished": result.finished,
            "checkpoint": str(result.checkpoint),
            "weights": str(result.weights),
            "metrics": result.metrics,
        }
        if args.json:
            say(args, json.dumps(summary))
        else:
            if result.metrics:
                say(args, f"COCO metrics after epoch {result.epoch} ({args.val_ann}):", format_metrics(result.metrics))
            state = "finished" if result.finished else "stopped (resume with --resume)"
            say(
                args,
                f"{state} after {result.global_iter} iterations, {result.epoch} epoch(s)",
                f"weights: {result.weights}  (wszoo predict/eval/push-to-hub --weights read their spec)",
                f"checkpoint: {result.checkpoint}",
            )
    return 0


def _cmd_eval(args) -> int:
    if args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available()):
        retain_freed_memory()  # this process is ours: reuse activations' pages (faster forwards)
    metrics = run_eval(
        images=args.images,
        ann=args.ann,
        model=args.model,
        weights=args.weights,
        checkpoint=args.checkpoint,
        results_file=args.results,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.workers,
        amp=args.amp,
        progress=show_progress(args),
        build_kwargs=_build_kwargs(args),
    )

    if dist_utils.is_main():
        if args.json:
            say(args, json.dumps(metrics))
        else:
            say(args, format_metrics(metrics))
            if args.results:
                say(args, f"detections (COCO results JSON): {args.results}")
    return 0


def register(subparsers) -> None:
    """Adds ``train`` and ``eval`` to the ``wszoo`` command's subparsers."""
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune on a COCO-format dataset (torchrun for multi-GPU)",
        description="Train a zoo architecture, or fine-tune published weights, on a COCO-format dataset with "
        "MMDetection's recipe (SGD, warm-up, step schedule). Writes epoch_<n>.safetensors, final.safetensors "
        "(weights that carry their classes and settings) and a resumable last.pth to --output-dir; run it under "
        "torchrun for several GPUs.",
        epilog="examples:\n"
        "  wszoo train --model mask_rcnn_r50_fpn_gn_ws_all_2x_coco --weights DEFAULT --classes person dog \\\n"
        "      --train-images data/train --train-ann data/train.json --output-dir runs/pets --schedule 1x\n"
        "  torchrun --nproc-per-node 8 -m wszoo.cli train --model faster_rcnn_r50_fpn_gn_ws_all_1x_coco \\\n"
        "      --backbone resnet50_gn_ws --train-images coco/train2017 --train-ann train.json --output-dir runs/r50",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--train-images", required=True, help="training image folder")
    p.add_argument("--train-ann", required=True, help="training instances JSON")
    p.add_argument("--val-images", help="validation image folder")
    p.add_argument("--val-ann", help="validation instances JSON")
    p.add_argument("--model", required=True, help="zoo detector name (architecture), see `wszoo list`")
    p.add_argument(
        "--weights",
        type=_weights,
        default=None,
        help="start from detector weights: DEFAULT (published), a file, or none (default)",
    )
    p.add_argument("--backbone", help="start from this zoo backbone's ImageNet weights, e.g. resnet50_gn_ws")
    p.add_argument("--classes", nargs="+", help="train on these category names only (keeps their pretrained rows)")
    p.add_argument("--output-dir", required=True, help="folder for checkpoints, weights and log.jsonl")
    p.add_argument(
        "--schedule", choices=sorted(SCHEDULES), default="1x", help="MMDetection's epoch schedule (default 1x)"
    )
    p.add_argument("--epochs", type=_int_at_least(1), help="override the schedule's epochs")
    p.add_argument("--steps", type=_int_at_least(1), nargs="+", help="override the lr-step epochs (each in 1..epochs)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=2, help="images per process (default 2)")
    p.add_argument("--lr", type=_positive_float, help="default: 0.02 x total batch / 16")
    p.add_argument(
        "--warmup-iters", type=_int_at_least(0), default=500, help="linear lr warm-up iterations (default 500)"
    )
    p.add_argument("--grad-clip", type=_positive_float, help="max gradient norm (default: none)")
    p.add_argument(
        "--seed", type=_seed, default=0, help="seed of the initialisation, data order and sampling (default 0)"
    )
    p.add_argument(
        "--log-every", type=_int_at_least(1), default=20, help="iterations between log.jsonl lines (default 20)"
    )
    p.add_argument("--checkpoint-every", type=_int_at_least(1), help="also checkpoint every N iterations")
    p.add_argument("--max-iters", type=_int_at_least(1), help="stop after N iterations (resumable)")
    p.add_argument("--eval-every", type=_int_at_least(0), default=1, help="evaluate every N epochs (0: at the end)")
    p.add_argument(
        "--keep-checkpoints",
        type=_int_at_least(1),
        metavar="N",
        help="keep only the N newest epoch_<n>.safetensors (MMDetection's max_keep_ckpts; default: all)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        help="resume from OUTPUT_DIR/last.pth (no value) or from the given checkpoint",
    )
    p.add_argument("--box-batch-size-per-image", type=_int_at_least(1), help="RoIs sampled per image (default 512)")
    _add_model_options(p)
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser(
        "eval",
        help="COCO box/mask AP on a COCO-format dataset (torchrun for multi-GPU)",
        description="Evaluate a detector on a COCO-format dataset and print COCO box (and mask) AP as a table "
        "or JSON; run it under torchrun for several GPUs.",
        epilog="examples:\n"
        "  wszoo eval --model mask_rcnn_r50_fpn_gn_ws_all_2x_coco --images coco/val2017 \\\n"
        "      --ann coco/annotations/instances_val2017.json\n"
        "  wszoo eval --weights runs/pets/final.safetensors --images data/val --ann data/val.json --json",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--ann", required=True, help="instances JSON")
    p.add_argument("--model", help="zoo model name (optional with weights written by `wszoo train`)")
    p.add_argument(
        "--weights",
        type=_weights,
        default="DEFAULT",
        help="DEFAULT (published), a file or hf-hub:ORG/REPO; weights written by `wszoo train` bring their "
        "architecture, classes, image scale and test settings",
    )
    p.add_argument("--checkpoint", help="weights written by `wszoo train` (.safetensors or last.pth)")
    p.add_argument("--results", help="write the COCO results JSON (the detections) here")
    p.add_argument("--batch-size", type=positive_int, default=1, help="images per forward pass, >= 1")
    _add_model_options(p)
    p.set_defaults(func=_cmd_eval)
