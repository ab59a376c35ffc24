#!/usr/bin/env python
"""Cost of checking that weights are finite, against loading them.

Every state dict wszoo reads (safetensors and ``.pth``, for conversion and for loading) goes
through :func:`wszoo.checkpoint_io.first_non_finite`: one sum per floating tensor and one
``isfinite`` over the sums. On the GN+WS R-50 Mask R-CNN (random weights, float32, written as
safetensors and read once first so the file is in the page cache) this script times:

* ``load``: what ``get_model(name, weights=FILE)`` does after building the model:
  ``safetensors.torch.load_file`` + ``load_state_dict``, without the check;
* ``load + check``: the same with ``first_non_finite`` between the two, as wszoo runs it;
* ``check alone``: ``first_non_finite`` on a state dict already in memory;
* ``isfinite per tensor``: the element-wise alternative, ``torch.isfinite(t).all()`` per tensor;
* ``get_model``: ``wszoo.get_model(name, weights=FILE)`` end to end (build, read, check, load).

``load_file`` maps the file, so whichever step touches the weights first pays for bringing
them in; the honest cost of the check is therefore the difference ``(load + check) - load``.
It prints that difference over ``load`` (goal: < 0.05), and the check alone over ``load`` and
over ``get_model``. Medians over interleaved repetitions; on a shared machine the spread is large.
The cached published weights (``weights="DEFAULT"``) skip the repeated check: they were checked
when converted and their digest record vouches for the bytes since, so this cost applies to
``.pth``/``.safetensors`` files given by path, to conversion and to trained weights.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import safetensors.torch as st
import torch
from _common import median, print_environment, print_table, timed

import wszoo
from wszoo.checkpoint_io import first_non_finite, save_safetensors
from wszoo.modeling.detector import build_detector
from wszoo.registry import get_entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mask_rcnn_r50_fpn_gn_ws_all_2x_coco")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None)
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

        def load(check: bool) -> None:
            state_dict = st.load_file(str(path))
            if check:
                first_non_finite(state_dict)
            model.load_state_dict(state_dict, strict=True)

        steps = {
            "load": lambda: load(False),
            "load + check": lambda: load(True),
            "check alone": lambda: first_non_finite(loaded),
            "isfinite per tensor": elementwise,
            "get_model": lambda: wszoo.get_model(entry.name, weights=path),
        }
        times: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(args.repeats):
            for name, step in steps.items():
                times[name].append(timed(step))
    assert first_non_finite(loaded) is None
    med = {k: median(v) for k, v in times.items()}
    print_table(["step", "median s", "min s"], [[name, med[name], min(times[name])] for name in steps])
    marginal = med["load + check"] - med["load"]
    print(f"\n(load + check - load) / load = {marginal / med['load']:.3f} (goal < 0.05)")
    print(f"check alone / load = {med['check alone'] / med['load']:.3f}")
    print(f"check alone / get_model = {med['check alone'] / med['get_model']:.3f}")
    print(f"check alone / isfinite per tensor = {med['check alone'] / med['isfinite per tensor']:.3f}")


if __name__ == "__main__":
    main()
