#!/usr/bin/env python
"""Conversion time, and loading a cached safetensors conversion vs converting at every load.

A synthetic MMDetection-layout checkpoint of the GN+WS R-50 Mask R-CNN
(``mask_rcnn_r50_fpn_gn_ws-all_2x_coco``) is written with ``torch.save`` as
``{'meta': ..., 'state_dict': ...}``: every key and shape of the published file
(``tests/data/mmdet_keys/<config>.json``), random float32 values. Files are read
once first so they are in the page cache. Measured (medians of ``--repeats``, variants
interleaved within each repetition):

* conversion: ``wszoo.conversion.api.convert_file`` .pth -> .safetensors (with the source
  sha256 computed by it, and with it passed in);
* baseline load: ``torch.load(weights_only=True)`` + ``convert_for`` + ``model.load_state_dict``;
* cached load: wszoo's path, ``read_safetensors`` + ``load_state_dict(assign=True)`` (goal: <= 0.3 of the baseline),
  and alternatives that could be faster: ``safetensors.torch.load_file``,
  ``safetensors.torch.load_model``, ``load_state_dict(assign=True)``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from _common import median, print_environment, print_table, timed

KEYS_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "mmdet_keys"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config",
        default="mask_rcnn_r50_fpn_gn_ws-all_2x_coco",
        help="MMDetection v2 config whose key layout to synthesise",
    )
    parser.add_argument("--keys-dir", type=Path, default=KEYS_DIR)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dir", default=None, help="where to create the temporary files (default: TMPDIR)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import safetensors
    import safetensors.torch as st

    from wszoo.checkpoint_io import read_safetensors
    from wszoo.conversion.api import convert_file, convert_for
    from wszoo.modeling.detector import build_detector
    from wszoo.registry import get_entry

    entry = get_entry(args.config)
    layout = json.loads((args.keys_dir / f"{args.config}.json").read_text())
    print_environment(
        {
            "safetensors": safetensors.__version__,
            "model": entry.name,
            "arch": entry.arch,
            "source keys": layout["num_keys"],
            "source params": layout["num_params"],
        }
    )

    work = Path(tempfile.mkdtemp(prefix="wszoo-load-", dir=args.dir))
    try:
        # ---- the synthetic MMDetection checkpoint ----
        generator = torch.Generator().manual_seed(0)
        state_dict = {}
        for key, shape, dtype, _kind in layout["keys"]:
            state_dict[key] = torch.randn(shape, generator=generator, dtype=getattr(torch, dtype))
        assert sum(t.numel() for t in state_dict.values()) == layout["num_params"]
        source = work / entry.file_name
        meta = {"mmdet_version": "2.0.0", "config_name": args.config, "CLASSES": list(entry.classes)}
        torch.save({"meta": meta, "state_dict": state_dict}, source)
        del state_dict
        destination = work / "converted.safetensors"
        source_sha = __import__("wszoo.checkpoint_io", fromlist=["x"]).sha256_of_file(source)
        convert_file(source, destination, model=entry.name, source_sha256=source_sha)  # warm-up
        print(
            f"source: {source.stat().st_size / 1e6:.1f} MB .pth; converted: "
            f"{destination.stat().st_size / 1e6:.1f} MB .safetensors\n"
        )
        for path in (source, destination):  # into the page cache
            path.read_bytes()

        num_classes = entry.num_classes
        model = build_detector(arch=entry.arch, num_classes=num_classes).eval()

        # ---- loaders ----
        parts: dict[str, list[float]] = {"torch.load": [], "convert_for": [], "load_state_dict": []}

        def baseline() -> None:
            t = timed(lambda: box.__setitem__("ckpt", torch.load(source, map_location="cpu", weights_only=True)))
            parts["torch.load"].append(t)
            t = timed(
                lambda: box.__setitem__(
                    "conv", convert_for(box["ckpt"]["state_dict"], arch=entry.arch, num_classes=num_classes)[0]
                )
            )
            parts["convert_for"].append(t)
            parts["load_state_dict"].append(timed(lambda: model.load_state_dict(box["conv"])))
            box.clear()

        box: dict = {}
        variants = {
            "baseline: torch.load + convert_for + load_state_dict": baseline,
            "read_safetensors + load_state_dict(assign=True) (wszoo's path)": lambda: model.load_state_dict(
                read_safetensors(destination)[0], assign=True
            ),
            "read_safetensors + load_state_dict (copying)": lambda: model.load_state_dict(
                read_safetensors(destination)[0]
            ),
            "safetensors.torch.load_file + load_state_dict": lambda: model.load_state_dict(st.load_file(destination)),
            "safetensors.torch.load_model(model, path)": lambda: st.load_model(model, destination),
            "safetensors.torch.load_file + load_state_dict(assign=True)": lambda: model.load_state_dict(
                st.load_file(destination), assign=True
            ),
        }
        names = list(variants)
        # Conversion (file to file) timed in the same loop.
        conv_names = ["convert_file (computes source sha256)", "convert_file (source_sha256 given)"]
        conversions = {
            conv_names[0]: lambda: convert_file(source, destination, model=entry.name),
            conv_names[1]: lambda: convert_file(source, destination, model=entry.name, source_sha256=source_sha),
        }
        times: dict[str, list[float]] = {n: [] for n in names + conv_names}
        touch_times: dict[str, list[float]] = {n: [] for n in names}

        def touch() -> None:
            # A zero-copy load (memory-mapped file, assign=True) defers reading the bytes to
            # their first use; a pass over every weight puts that cost back in the comparison.
            with torch.no_grad():
                float(sum(t.sum() for t in model.state_dict().values() if t.is_floating_point()))

        for fn in variants.values():  # warm-up
            fn()
        for key in parts:
            parts[key].clear()
        for rep in range(args.repeats):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                times[name].append(timed(variants[name]))
                touch_times[name].append(timed(touch))
            for name in conv_names:
                times[name].append(timed(conversions[name]))
            print(f"  rep {rep + 1}/{args.repeats} done", flush=True)

        # The model really holds the file's tensors after a load.
        reference = read_safetensors(destination)[0]
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in reference.items()), "loaded weights differ from the file"

        base = median(times[names[0]])
        print("\n== conversion (.pth -> .safetensors) ==")
        print_table(["step", "median s", "min s"], [[n, median(times[n]), min(times[n])] for n in conv_names])
        print("\n== loading weights into a built model ==")
        total = {n: [a + b for a, b in zip(times[n], touch_times[n])] for n in names}
        base_total = median(total[names[0]])
        print_table(
            ["method", "median s", "min s", "ratio to baseline", "+ first read of all weights, s", "ratio"],
            [
                [
                    n,
                    median(times[n]),
                    min(times[n]),
                    f"{median(times[n]) / base:.3f}",
                    median(total[n]),
                    f"{median(total[n]) / base_total:.3f}",
                ]
                for n in names
            ],
        )
        print("\nbaseline breakdown (median s): " + ", ".join(f"{k} {median(v):.3f}" for k, v in parts.items()))
        ratio = median(times[names[1]]) / base
        print(
            f"\ncached-load ratio (wszoo: read_safetensors + load_state_dict(assign=True)) / baseline = {ratio:.3f}; "
            f"goal <= 0.3: {'MET' if ratio <= 0.3 else 'MISSED'}"
        )
        best = min(names[1:], key=lambda n: median(times[n]))
        print(
            f"fastest cached load: {best}: {median(times[best]) / base:.3f} of the baseline "
            f"({median(total[best]) / base_total:.3f} counting the first read of every weight)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
