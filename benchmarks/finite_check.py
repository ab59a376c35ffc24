#!/usr/bin/env python
"""Cost of checking that weights are finite, against loading them.

Every state dict wszoo reads (safetensors and ``.pth``, for conversion and for loading) goes
through :func:`wszoo.checkpoint_io.first_non_finite`: one sum per floating tensor and one
``isfinite`` over the sums. On the GN+WS R-50 Mask R-CNN (random weights, float32, written as
safetensors and read once first so the file is in the page cache) this script times:

* ``get_model``: ``wszoo.get_model(name, weights=FILE)`` end to end (build, read, check, load);
* ``get_model, no check``: the same with the check switched off;
* ``... + first use``: both followed by one read of every weight (a sum over the parameters,
  standing for the first forward, which must bring the mapped weights in when the check did
  not) -- the difference of these two is what a user pays over a model's life (goal: < 5%);
* ``load``: ``safetensors.torch.load_file`` + ``load_state_dict(assign=True)``, what
  ``get_model`` does after building, without the check;
* ``check alone``: ``first_non_finite`` on a state dict already in memory;
* ``isfinite per tensor``: the element-wise alternative, ``torch.isfinite(t).all()`` per tensor;
* ``get_model .pth`` / ``..., no check``: the same model from an MMDetection-layout ``.pth``
  (random values under the real checkpoint's keys, ``tests/data/mmdet_keys``): ``torch.load``
  reads every byte and conversion renames, so here the check is a small part of the load;
* with ``--forward``, ``... + first forward``: ``get_model`` followed by one forward pass on a
  random image at the configs' test scale (800x1216), which is what a user waits for before the
  first detection.

``load_file`` maps the file and ``assign=True`` adopts the tensors, so ``load`` itself reads
almost nothing: whichever step touches the weights first (the check, or else the first forward)
pays for bringing them in. Medians (and minima) over interleaved repetitions; on a shared
machine the spread is large. The cached published weights (``weights="DEFAULT"``) skip the
repeated check: they were checked when converted and their digest record vouches for the bytes
since, so this cost applies to ``.pth``/``.safetensors`` files given by path, to conversion and
to trained weights.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import safetensors.torch as st
import torch
from _common import median, print_environment, print_table, timed

import wszoo
from wszoo import checkpoint_io
from wszoo.checkpoint_io import first_non_finite, save_safetensors
from wszoo.modeling.detector import build_detector
from wszoo.registry import get_entry

REPO = Path(__file__).resolve().parents[1]


def mmdet_layout_checkpoint(config: str, path: Path) -> None:
    """A ``.pth`` with the real checkpoint's keys and shapes, random values, as MMDetection saves it."""
    keys = json.loads((REPO / "tests" / "data" / "mmdet_keys" / f"{config}.json").read_text())["keys"]
    generator = torch.Generator().manual_seed(0)
    state = {name: torch.randn(shape, generator=generator) * 0.01 for name, shape, *_ in keys}
    torch.save({"state_dict": state, "meta": {}}, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mask_rcnn_r50_fpn_gn_ws_all_2x_coco")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--forward", action="store_true", help="also time get_model + one 800x1216 forward")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    entry = get_entry(args.model)
    print_environment({"model": entry.name})

    model = build_detector(arch=entry.arch, num_classes=entry.num_classes)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    numel = sum(v.numel() for v in state.values() if v.is_floating_point())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.safetensors"
        save_safetensors(state, path, metadata={"format": "pt"})
        print(f"{len(state)} tensors, {numel / 1e6:.1f} M floats, file {path.stat().st_size / 2**20:.0f} MB\n")
        loaded = st.load_file(str(path))
        first_non_finite(loaded)  # warm-up: page cache and mapping

        def elementwise() -> None:
            for value in loaded.values():
                if value.is_floating_point():
                    bool(torch.isfinite(value).all())

        def load() -> None:
            model.load_state_dict(st.load_file(str(path)), strict=True, assign=True)

        real_check = checkpoint_io.check_finite

        pth = Path(tmp) / f"{entry.mmdet_v2_config}.pth"
        mmdet_layout_checkpoint(entry.mmdet_v2_config, pth)
        image = torch.randint(0, 256, (3, 800, 1216), dtype=torch.uint8)

        def get_model(check: bool, use: bool = False, source: Path = path, forward: bool = False) -> None:
            checkpoint_io.check_finite = real_check if check else (lambda state_dict, *, what: None)
            try:
                built = wszoo.get_model(entry.name, weights=source)
            finally:
                checkpoint_io.check_finite = real_check
            if use:
                with torch.no_grad():
                    for parameter in built.parameters():
                        parameter.sum()
            if forward:
                with torch.inference_mode():
                    built.eval()([image])

        steps = {
            "get_model": lambda: get_model(True),
            "get_model, no check": lambda: get_model(False),
            "get_model + first use": lambda: get_model(True, use=True),
            "get_model, no check + first use": lambda: get_model(False, use=True),
            "load": load,
            "check alone": lambda: first_non_finite(loaded),
            "isfinite per tensor": elementwise,
            "get_model .pth": lambda: get_model(True, source=pth),
            "get_model .pth, no check": lambda: get_model(False, source=pth),
        }
        if args.forward:
            steps["get_model + first forward"] = lambda: get_model(True, forward=True)
            steps["get_model, no check + first forward"] = lambda: get_model(False, forward=True)
        times: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(args.repeats):
            for name, step in steps.items():
                times[name].append(timed(step))
    assert first_non_finite(loaded) is None
    med = {k: median(v) for k, v in times.items()}
    print_table(["step", "median s", "min s"], [[name, med[name], min(times[name])] for name in steps])
    best = {k: min(v) for k, v in times.items()}
    for label, t in (("medians", med), ("minima", best)):
        pairs = [("get_model .pth", "get_model .pth, no check")]
        if args.forward:
            pairs.append(("get_model + first forward", "get_model, no check + first forward"))
        for checked, unchecked in pairs:
            print(f"\n{label}: ({checked} - no check) / no check = {(t[checked] - t[unchecked]) / t[unchecked]:.3f}")
        marginal = t["get_model"] - t["get_model, no check"]
        lifetime = t["get_model + first use"] - t["get_model, no check + first use"]
        print(
            f"\n{label}: (get_model - get_model, no check) / get_model, no check = "
            f"{marginal / t['get_model, no check']:.3f}"
        )
        print(
            f"{label}: with first use: (check - no check) / no check = "
            f"{lifetime / t['get_model, no check + first use']:.3f} (goal < 0.05)"
        )
        print(
            f"{label}: check alone / get_model = {t['check alone'] / t['get_model']:.3f}; "
            f"check alone / load = {t['check alone'] / t['load']:.3f}; "
            f"check alone / isfinite per tensor = {t['check alone'] / t['isfinite per tensor']:.3f}"
        )


if __name__ == "__main__":
    main()
