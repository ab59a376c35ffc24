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
from ..registry import entries, entry_record, get_entry, list_models, model_table
from ..zoo import ZooEntry
from .arguments import existing_file

__all__ = ["register"]


def _cmd_list(args) -> int:
    names = list_models(
        args.pattern, task=args.task, backbone=args.backbone, has_weights=True if args.with_weights else None
    )
    entries = [get_entry(n) for n in names]
    if args.json:
        print(json.dumps([entry_record(e) for e in entries], indent=1))
    else:
        print(model_table(entries))
    return 0


def _cmd_info(args) -> int:
    entry = get_entry(args.name)
    record = entry_record(entry)
    record["arch"] = repr(entry.arch)
    record["num_classes"] = entry.num_classes
    print(json.dumps(record, indent=1))
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
            progress=not args.quiet,
            max_bytes=entry.max_bytes,
        )
        print(path)
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
    print(f"converted {args.source} ({entry.name}, {len(report.mappings)} tensors) -> {args.destination}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the zoo commands to the ``wszoo`` command's subparsers."""

    p = sub.add_parser("list", help="list the zoo")
    p.add_argument("pattern", nargs="?", help="wildcard on names, e.g. 'mask_rcnn_*'")
    p.add_argument("--task", choices=("object_detection", "instance_segmentation", "backbone"))
    p.add_argument("--backbone", help="published backbone, wildcards allowed, e.g. 'X-101*'")
    p.add_argument("--with-weights", action="store_true", help="only entries with published weights")
    p.add_argument("--json", action="store_true", help="print JSON objects instead of a table")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="everything the zoo knows about one model")
    p.add_argument("name")
    p.set_defaults(func=_cmd_info)

    for name, func, help_ in (
        ("download", _cmd_download, "download and verify checkpoints into the cache"),
        ("verify", _cmd_verify, "re-hash files at rest against the zoo"),
        ("import-weights", _cmd_import, "accept a hand-copied checkpoint into the cache if its hash matches"),
    ):
        p = sub.add_parser(name, help=help_)
        if name == "download":
            p.add_argument("names", nargs="+")
            p.add_argument("--quiet", action="store_true")
        elif name == "verify":
            p.add_argument("target", nargs="?", help="a file or a model name")
            p.add_argument("--all", action="store_true", help="every cached zoo checkpoint")
        else:
            p.add_argument("file")
        p.add_argument("--cache-dir", help="default: $WSZOO_CACHE or $TORCH_HOME/hub/checkpoints")
        p.set_defaults(func=func)

    p = sub.add_parser("convert", help="convert an MMDetection checkpoint to wszoo safetensors")
    p.add_argument("source", type=existing_file, help="the MMDetection .pth")
    p.add_argument("destination", help="the .safetensors file to write")
    p.add_argument("--model", help="zoo name; recognised from the checkpoint when omitted")
    p.add_argument("--report", help="write every key mapping to this JSON file")
    p.set_defaults(func=_cmd_convert)
