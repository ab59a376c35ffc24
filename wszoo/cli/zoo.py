"""``wszoo list``, ``info``, ``download``, ``verify``, ``import-weights`` and ``convert``: the zoo commands."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

from ..checkpoint_io import sha256_of_file
from ..conversion.api import convert_file
from ..hub.download import default_cache_dir, download, read_digest_record, record_digest
from ..registry import entries, entry_info, entry_record, get_entry, list_models, model_table
from ..zoo import ZooEntry
from .arguments import TASK_HELP, HelpFormatter, add_output_options, existing_file, say, show_progress, task

__all__ = ["register"]


def _cmd_list(args) -> int:
    names = list_models(
        args.pattern,
        exclude=args.exclude,
        task=args.task,
        backbone=args.backbone,
        has_weights=True if args.with_weights else None,
    )
    entries = [get_entry(n) for n in names]
    if args.json:
        print(json.dumps([entry_record(e) for e in entries], indent=1))
    else:
        print(model_table(entries))
    return 0


def _cmd_info(args) -> int:
    print(json.dumps(entry_info(get_entry(args.name)), indent=1))
    return 0


def _cache_dir(args) -> Optional[Path]:
    return Path(args.cache_dir) if args.cache_dir else None


def _cmd_download(args) -> int:
    for name in args.names:
        entry = _with_weights(name)
        path = download(
            url=entry.model_url,
            file_name=entry.file_name,
            sha256_prefix=entry.expected_sha256,
            cache_dir=_cache_dir(args),
            legacy_mirrors=entry.mirrors,
            progress=show_progress(args),
            max_bytes=entry.max_bytes,
        )
        say(args, str(path))
    return 0


def _with_weights(name: str) -> ZooEntry:
    entry = get_entry(name)
    if not entry.has_weights:
        raise ValueError(f"{entry.name} has no published weights")
    return entry


def _verify_targets(args) -> list[tuple[Path, Optional[ZooEntry]]]:
    cache = _cache_dir(args) or default_cache_dir()
    if args.all:
        return [(cache / e.file_name, e) for e in entries() if e.has_weights and (cache / e.file_name).is_file()]
    if args.target is None:
        raise ValueError("give a file, a model name, or --all")
    path = Path(args.target)
    if path.is_file():
        return [(path, next((e for e in entries() if e.file_name == path.name), None))]
    entry = _with_weights(args.target)
    return [(cache / entry.file_name, entry)]


def _cmd_verify(args) -> int:
    failed = 0
    targets = _verify_targets(args)
    if not targets:
        print("no cached checkpoints to verify")
    for path, entry in targets:
        if entry is None:
            print(f"FAIL {path}: its name matches no zoo entry")
            failed += 1
        elif not path.is_file():
            print(f"FAIL {path}: missing (run `wszoo download {entry.name}`)")
            failed += 1
        else:
            ok, line = _verify_one(path, entry)
            failed += not ok
            print(line)
    return 1 if failed else 0


def _verify_one(path: Path, entry: ZooEntry) -> tuple[bool, str]:
    """Re-hashes ``path`` in full; checks it against the entry and the digest recorded at first use."""
    digest = sha256_of_file(path)
    expected = entry.expected_sha256
    record = read_digest_record(path)
    if not digest.startswith(expected):
        return False, f"FAIL {path}: sha256 {digest[:16]}..., expected {expected[:16]}..."
    if record is not None and record["sha256"] != digest:
        return False, (
            f"FAIL {path}: sha256 {digest[:16]}... differs from the {record['sha256'][:16]}... recorded when it "
            f"was first verified; delete it and run `wszoo download {entry.name}`"
        )
    record_digest(path, digest)  # trusted from now on: later loads check size, mtime and this digest
    return True, f"ok   {path}: sha256 {digest[:16]}..., expected {expected[:16]}..."


def _cmd_import(args) -> int:
    source = Path(args.file)
    if not source.is_file():
        raise ValueError(f"{source} is not a file")
    digest = sha256_of_file(source)
    entry = next((e for e in entries() if e.has_weights and digest.startswith(e.expected_sha256)), None)
    if entry is None:
        print(f"refused: {source} (sha256 {digest[:16]}...) matches no zoo checkpoint", file=sys.stderr)
        return 1
    cache = _cache_dir(args) or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    destination = cache / entry.file_name
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=entry.file_name + ".", suffix=".import")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, destination)
    finally:
        Path(tmp).unlink(missing_ok=True)
    record_digest(destination, digest)
    print(f"imported {source} as {entry.name}: {destination}")
    return 0


def _cmd_convert(args) -> int:
    entry, report = convert_file(args.source, args.destination, model=args.model, report=args.report)
    say(args, f"converted {args.source} ({entry.name}, {len(report.mappings)} tensors) -> {args.destination}")
    return 0


def _command(sub: argparse._SubParsersAction, name: str, summary: str, description: str, examples: str = ""):
    return sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=f"examples:\n{examples}" if examples else None,
        formatter_class=HelpFormatter,
    )


def _cache_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", help="the checkpoint cache (default: $WSZOO_CACHE, else $TORCH_HOME/hub/checkpoints)")


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the zoo commands to the ``wszoo`` command's subparsers."""
    p = _command(
        sub,
        "list",
        "list the zoo's models",
        "List the zoo's models as a Markdown table (or JSON objects), filtered by name, task and backbone.",
        "  wszoo list 'mask_rcnn_*' --exclude '*_20_23_24e_*'\n  wszoo list --task detection --with-weights --json",
    )
    p.add_argument("pattern", nargs="?", help="shell-style wildcard a name must match, e.g. 'mask_rcnn_*'")
    p.add_argument(
        "--exclude",
        action="append",
        metavar="PATTERN",
        help="leave out names matching this wildcard (repeatable), e.g. '*_r18_*'",
    )
    p.add_argument("--task", type=task, metavar="TASK", help=TASK_HELP)
    p.add_argument("--backbone", help="published backbone, case-insensitive, wildcards allowed, e.g. 'X-101*'")
    p.add_argument("--with-weights", action="store_true", help="only entries with published weights")
    p.add_argument("--json", action="store_true", help="print JSON objects instead of a table")
    p.set_defaults(func=_cmd_list)

    p = _command(
        sub,
        "info",
        "everything the zoo knows about one model, as JSON",
        "Print one zoo entry as a JSON object: every field once, the architecture as a nested object, "
        "published metrics, URLs, the checkpoint's file name and hash, and the class names.",
        "  wszoo info mask-rcnn_r50_fpn_gn-ws-all_2x_coco\n  wszoo info faster_rcnn_r50_fpn_gn_ws_all_1x_coco | head",
    )
    p.add_argument("name", help="zoo name or alias: builder name, MMDetection v2/v3 config name or config path")
    p.set_defaults(func=_cmd_info)

    p = _command(
        sub,
        "download",
        "download and verify checkpoints into the cache",
        "Download published checkpoints into the cache, verify their sha256 and print each cached path.",
        "  wszoo download mask_rcnn_r50_fpn_gn_ws_all_2x_coco --no-progress",
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="zoo names or aliases with published weights")
    _cache_option(p)
    add_output_options(p)
    p.set_defaults(func=_cmd_download)

    p = _command(
        sub,
        "verify",
        "re-hash files at rest against the zoo",
        "Re-hash cached or given checkpoint files in full and compare them with the zoo's sha256 and the digest "
        "recorded when each was first verified; exit 1 if any fails.",
        "  wszoo verify --all\n  wszoo verify ~/Downloads/mask_rcnn_r50_fpn_gn_ws-all_2x_coco_20200226-16acb762.pth",
    )
    p.add_argument("target", nargs="?", help="a checkpoint file, or a zoo name whose cached checkpoint to verify")
    p.add_argument("--all", action="store_true", help="verify every cached zoo checkpoint")
    _cache_option(p)
    p.set_defaults(func=_cmd_verify)

    p = _command(
        sub,
        "import-weights",
        "accept a hand-copied checkpoint into the cache if its hash matches",
        "Copy a checkpoint obtained by other means (another machine, a mirror) into the cache, under its zoo "
        "file name, if its sha256 matches a published checkpoint; exit 1 otherwise.",
        "  wszoo import-weights /mnt/usb/mask_rcnn_r50_fpn_gn_ws-all_2x_coco_20200226-16acb762.pth",
    )
    p.add_argument("file", help="the checkpoint file to import (any name: it is recognised by its sha256)")
    _cache_option(p)
    p.set_defaults(func=_cmd_import)

    p = _command(
        sub,
        "convert",
        "convert an MMDetection checkpoint to wszoo safetensors",
        "Convert an MMDetection .pth (published or your own run) into a wszoo .safetensors file with metadata. "
        "Without --model the model is recognised from the checkpoint's meta, from a file or folder name that "
        "starts with a zoo config name (v2 or v3 spelling, e.g. work_dirs/<config>/epoch_12.pth), or from its "
        "key layout when only one published model has it.",
        "  wszoo convert mask_rcnn_r50_fpn_gn_ws-all_2x_coco_20200226-16acb762.pth mask_r50.safetensors\n"
        "  wszoo convert work_dirs/mask-rcnn_r50_fpn_gn-ws-all_2x_coco/epoch_12.pth run.safetensors\n"
        "  wszoo convert latest.pth out.safetensors --model mask_rcnn_r50_fpn_gn_ws_all_2x_coco",
    )
    p.add_argument("source", type=existing_file, help="the MMDetection .pth checkpoint to read")
    p.add_argument("destination", help="the .safetensors file to write (atomically)")
    p.add_argument("--model", help="zoo name or alias; recognised from the checkpoint when omitted")
    p.add_argument("--report", help="also write every key mapping (source -> target) to this JSON file")
    add_output_options(p, progress=False)
    p.set_defaults(func=_cmd_convert)
