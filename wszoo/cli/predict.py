"""``wszoo predict`` and ``wszoo push-to-hub``: argparse over the inference and Hub modules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..builders import get_model
from ..hub.hf_publish import push_to_hub
from ..hub.weights import trained_weights
from ..inference.predict import predict
from ..model_spec import spec_settings
from ..registry import get_entry
from ..settings import DEFAULT_SETTINGS
from .arguments import add_output_options, positive_int, probability, say, show_progress

__all__ = ["register"]


def _cmd_predict(args: argparse.Namespace) -> int:
    entry = get_entry(args.model)
    if entry.task == "backbone":
        raise ValueError(
            f"{entry.name} is an ImageNet backbone; `wszoo predict` needs a detector "
            "(see `wszoo list --task object_detection`)"
        )
    weights = None if args.weights.lower() == "none" else args.weights
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    # Weights written by `wszoo train` bring their classes, image scale and test settings.
    weights, spec = trained_weights(entry, weights) if weights is not None else (None, None)
    settings = spec_settings(spec)
    # Below the model's threshold the model must keep low scores too; above it, they are filtered.
    # Binary masks are all predict draws and writes: MMDetection's bool masks are the cheapest form.
    build: dict = dict(score_thresh=min(args.score_threshold, settings.score_thresh), mask_format="bool")
    if args.image_scale is not None:  # given explicitly: wins over the weights' own
        build["image_scale"] = tuple(args.image_scale)
    model = get_model(entry.name, weights=weights, progress=not args.quiet, **build)
    classes = tuple(spec.get("classes") or ()) if spec is not None else entry.classes
    report = predict(
        model,
        args.images,
        out_dir=args.out,
        classes=classes,
        score_threshold=args.score_threshold,
        batch_size=args.batch_size,
        device=device,
        progress=not args.quiet,
    )
    for path, reason in report.failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(
        f"wrote {len(report.written)} image(s) and JSON to {args.out}"
        + (f"; {len(report.failed)} file(s) skipped" if report.failed else "")
    )
    return 1 if report.failed else 0


def _cmd_push(args: argparse.Namespace) -> int:
    info = push_to_hub(
        args.name,
        repo_id=args.repo_id,
        weights=args.weights,
        private=args.private or None,
        token=args.token,
        revision=args.revision,
        commit_message=args.commit_message,
        create_pr=args.create_pr,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        progress=show_progress(args),
    )
    say(args, f"pushed {args.name} to {args.repo_id}: {getattr(info, 'pr_url', None) or info.commit_url}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``predict`` and ``push-to-hub`` to the ``wszoo`` command's subparsers."""
    p = subparsers.add_parser("predict", help="run a detector on images; write drawn PNGs and JSON detections")
    p.add_argument("model", help="zoo name or alias (see `wszoo list`)")
    p.add_argument("images", nargs="+", help="JPEG/PNG files and folders of them")
    p.add_argument(
        "--weights",
        default="DEFAULT",
        help="'DEFAULT' (published), a .pth/.safetensors file, hf-hub:ORG/REPO[@REV], or 'none'; weights "
        "written by `wszoo train` bring their classes, image scale and test settings",
    )
    p.add_argument(
        "--score-threshold", type=probability, default=0.3, help="keep detections scoring above this, in [0, 1]"
    )
    p.add_argument("--out", default="predictions", help="output folder (default: ./predictions)")
    p.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument(
        "--batch-size", type=positive_int, default=4, help="images per forward pass, >= 1 (equal sizes only)"
    )
    p.add_argument(
        "--image-scale",
        type=positive_int,
        nargs=2,
        metavar=("LONG", "SHORT"),
        help="keep-ratio test scale (default: the one trained weights record, else the configs' {} {})".format(
            *DEFAULT_SETTINGS.image_scale
        ),
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_predict)

    p = subparsers.add_parser("push-to-hub", help="upload a model, its config and model card to the Hugging Face Hub")
    p.add_argument("name", help="zoo name or alias")
    p.add_argument("--repo-id", required=True, help="ORG/REPO on the Hub (created if missing)")
    p.add_argument(
        "--weights",
        help="a local .pth/.safetensors to publish instead of the published checkpoint; weights written by "
        "`wszoo train` publish their classes, image scale and test settings",
    )
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--token", help="Hub token (default: huggingface_hub's login)")
    p.add_argument("--revision", help="branch to commit to")
    p.add_argument("--commit-message", help="the commit's message (default: one naming the model)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--cache-dir", help="wszoo's download cache (default: $WSZOO_CACHE or torch.hub's)")
    add_output_options(p)
    p.set_defaults(func=_cmd_push)
