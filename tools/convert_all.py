"""Batch conversion: every zoo checkpoint (downloaded and verified, or found in a folder) to
wszoo safetensors plus a JSON mapping report, e.g. to publish them as another source.

    python tools/convert_all.py --out converted/                 # download, then convert all
    python tools/convert_all.py --src ~/mmdet_ckpts --out converted/ --only 'mask_rcnn_*'

Each output is ``<out>/<name>.safetensors`` with ``<out>/<name>.report.json``; a summary line
per model gives the source sha256 and the number of tensors. Conversion is deterministic, so
re-running produces byte-identical files.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

from wszoo.checkpoint_io import sha256_of_file
from wszoo.conversion.api import convert_file
from wszoo.hub.download import download
from wszoo.registry import get_entry, list_models


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--src", type=Path, help="folder holding the original .pth files (else download them)")
    parser.add_argument("--only", default="*", help="wildcard on zoo names")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name in list_models(has_weights=True):
        if not fnmatch.fnmatchcase(name, args.only):
            continue
        entry = get_entry(name)
        if args.src is not None:
            source = args.src / entry.file_name
            if not source.is_file():
                print(f"skip {name}: {source} not found")
                continue
        else:
            source = download(
                url=entry.model_url,
                file_name=entry.file_name,
                sha256_prefix=entry.expected_sha256,
                max_bytes=entry.max_bytes,
                legacy_mirrors=entry.mirrors,
            )
        digest = sha256_of_file(source)
        if not digest.startswith(entry.expected_sha256):
            print(f"FAIL {name}: {source} has sha256 {digest[:16]}..., expected {entry.sha256_prefix}...")
            failures += 1
            continue
        destination = args.out / f"{name}.safetensors"
        _, report = convert_file(
            source, destination, model=name, report=args.out / f"{name}.report.json", source_sha256=digest
        )
        print(f"ok   {name}: sha256 {digest} -> {destination} ({len(report.mappings)} tensors)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
