"""``wszoo predict`` and ``wszoo push-to-hub``: argparse over the inference and Hub modules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..hub.hf_publish import push_to_hub
from ..inference.allocator import retain_freed_memory
from ..inference.drawing import DRAW_THRESHOLD
from ..inference.predict import write_predictions
from ..inference.predictor import Predictor
from ..settings import DEFAULT_SETTINGS
from .arguments import HelpFormatter, add_output_options, image_scale, positive_int, probability, say, show_progress

__all__ = ["legacy_argv", "register"]


def _cmd_predict(args: argparse.Namespace) -> int:
    predictor = Predictor(
        args.model,
        weights=args.weights,  # the Predictor reads 'none' as no weights
        device=None if args.device == "auto" else args.device,
        score_threshold=args.score_threshold,
        image_scale=args.image_scale,
        batch_size=args.batch_size,
        progress=show_progress(args),
    )
    if predictor.device.type == "cpu":
        retain_freed_memory()  # this process is ours: reuse activations' pages (faster forwards)
    report = write_predictions(
        predictor,
        args.images,
        out_dir=args.out,
        draw_threshold=args.draw_threshold,
        boxes=not args.no_boxes,
        masks=not args.no_masks,
        scores=not args.no_scores,
        progress=show_progress(args),
    )
    for path, reason in report.failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    say(
        args,
        f"wrote {len(report.written)} image(s) and JSON to {args.out}"
        + (f"; {len(report.failed)} file(s) skipped" if report.failed else ""),
    )
    return 1 if report.failed else 0


def legacy_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with wszoo 0.1's ``predict --image-scale LONG SHORT`` rewritten as ``LONGxSHORT``.

    The old form still works; a note on stderr (not under ``--quiet``) gives the new one.
    """
    argv = list(argv)
    command = next((token for token in argv if not token.startswith("-")), None)
    if command != "predict":
        return argv
    for index, token in enumerate(argv[:-2]):
        long_side, short_side = argv[index + 1 : index + 3]
        if token == "--image-scale" and long_side.isdigit() and short_side.isdigit():
            argv[index + 1 : index + 3] = [f"{long_side}x{short_side}"]
            if "--quiet" not in argv and "-q" not in argv:
                print(
                    f"wszoo predict: note: `--image-scale {long_side} {short_side}` is the old form; "
                    f"write `--image-scale {long_side}x{short_side}`",
                    file=sys.stderr,
                )
            break
    return argv


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
    p = subparsers.add_parser(
        "predict",
        help="run a detector on images; write drawn PNGs and JSON detections",
        description="Runs a detector on JPEG/PNG files and folders and writes, per image, <name>.json "
        "(every detection above --score-threshold) and <name>.png (those above --draw-threshold drawn).",
        epilog="examples:\n"
        "  wszoo predict mask_rcnn_r50_fpn_gn_ws_all_2x_coco photos/ street.jpg --out predictions/\n"
        "  wszoo predict faster_rcnn_r50_fpn_gn_ws_all_1x_coco street.jpg --draw-threshold 0.5 --no-scores\n"
        "  wszoo predict mask_rcnn_r50_fpn_gn_ws_all_2x_coco photos/ --weights runs/mine/final.safetensors",
        formatter_class=HelpFormatter,
    )
    p.add_argument("model", help="zoo name or alias of a detector (see `wszoo list`)")
    p.add_argument("images", nargs="+", help="JPEG/PNG files, and folders of them (not recursive)")
    p.add_argument(
        "--weights",
        default="DEFAULT",
        metavar="W",
        help="'DEFAULT' (published), a .pth/.safetensors file, hf-hub:ORG/REPO[@REV], or 'none'; weights "
        "written by `wszoo train` bring their classes, image scale and test settings",
    )
    p.add_argument(
        "--score-threshold",
        type=probability,
        metavar="T",
        help="save detections scoring above this, in [0, 1] (default: the model's test threshold, "
        f"{DEFAULT_SETTINGS.score_thresh} for the published configs)",
    )
    p.add_argument(
        "--draw-threshold",
        type=probability,
        metavar="T",
        default=DRAW_THRESHOLD,
        help=f"draw detections scoring above this, in [0, 1] (default: {DRAW_THRESHOLD}, as MMDetection's demo); "
        "the JSON keeps all above --score-threshold",
    )
    p.add_argument("--no-boxes", action="store_true", help="do not draw boxes and labels")
    p.add_argument("--no-masks", action="store_true", help="do not draw masks (Mask R-CNN)")
    p.add_argument("--no-scores", action="store_true", help="labels show the class name only")
    p.add_argument("--out", default="predictions", metavar="DIR", help="output folder (default: ./predictions)")
    p.add_argument(
        "--device", metavar="DEV", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1, ..."
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=4,
        metavar="N",
        help="images per forward pass, >= 1 (equal sizes only)",
    )
    p.add_argument(
        "--image-scale",
        type=image_scale,
        metavar="LONGxSHORT",
        help="keep-ratio test scale, e.g. 1333x800 (default: the one trained weights record, else the "
        "configs' {}x{}); the old form LONG SHORT still works".format(*DEFAULT_SETTINGS.image_scale),
    )
    add_output_options(p)
    p.set_defaults(func=_cmd_predict)

    p = subparsers.add_parser(
        "push-to-hub",
        help="upload a model, its config and model card to the Hugging Face Hub",
        description="Uploads a zoo model's weights (converted safetensors), config.json and a model card to a "
        "Hugging Face Hub repository; `get_model(name, weights='hf-hub:ORG/REPO')` loads them back.",
        epilog="examples:\n"
        "  wszoo push-to-hub mask_rcnn_r50_fpn_gn_ws_all_2x_coco --repo-id me/mask-rcnn-gn-ws\n"
        "  wszoo push-to-hub mask_rcnn_r50_fpn_gn_ws_all_2x_coco --repo-id me/my-run "
        "--weights runs/mine/final.safetensors --private",
        formatter_class=HelpFormatter,
    )
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
