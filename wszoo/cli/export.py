"""``wszoo export``: argparse over :mod:`wszoo.export`."""

from __future__ import annotations

import argparse

from ..builders import get_model
from ..export import DEFAULT_OPSET, export_onnx, export_program, save_program
from ..registry import get_entry
from .arguments import HelpFormatter, add_output_options, image_scale, say, show_progress

__all__ = ["register"]

FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}


def _cmd_export(args: argparse.Namespace) -> int:
    entry = get_entry(args.name)
    if entry.task == "backbone":
        raise ValueError(f"{entry.name} is an ImageNet backbone; `wszoo export` exports detectors")
    weights = None if args.weights.lower() == "none" else args.weights
    model = get_model(entry.name, weights=weights, progress=show_progress(args))
    if args.format == "onnx":
        path = export_onnx(
            model, args.output, opset=args.opset, mask_format=args.mask_format, image_scale=args.image_scale
        )
    else:
        program = export_program(model, mask_format=args.mask_format, image_scale=args.image_scale)
        path = save_program(program, args.output)
    say(args, f"exported {entry.name} ({args.format}) to {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``export`` to the ``wszoo`` command's subparsers."""
    p = subparsers.add_parser(
        "export",
        help="export a detector as ONNX or a torch.export program (.pt2)",
        description="Export a detector with pre- and post-processing inside the graph: uint8 RGB (3, H, W) in "
        "(dynamic H and W), boxes/scores/labels[/masks] out, weight standardization folded into the convs.",
        epilog="examples:\n  wszoo export mask_rcnn_r50_fpn_gn_ws_all_2x_coco --format onnx --output mask_r50.onnx\n"
        "  wszoo export faster_rcnn_r18_fpn_gn_ws --weights none --format torch-export --output r18.pt2 "
        "--image-scale 640x384",
        formatter_class=HelpFormatter,
    )
    p.add_argument("name", help="zoo detector name or alias (see `wszoo list`)")
    p.add_argument(
        "--weights",
        default="DEFAULT",
        help="'DEFAULT' (published), a .pth/.safetensors file, hf-hub:ORG/REPO[@REV], or 'none'",
    )
    p.add_argument("--format", choices=sorted(FORMATS), required=True, help="onnx or torch-export (.pt2)")
    p.add_argument("--output", required=True, help="the file to write (.onnx or .pt2)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument(
        "--image-scale",
        type=image_scale,
        metavar="LONGxSHORT",
        help="keep-ratio resize inside the graph (default: the model's, 1333x800)",
    )
    p.add_argument(
        "--mask-format",
        choices=("bool", "probs"),
        default="bool",
        help="Mask R-CNN masks: bool (N, H, W) (default) or float probabilities (N, 1, H, W)",
    )
    add_output_options(p)
    p.set_defaults(func=_cmd_export)
