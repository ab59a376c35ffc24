"""Opt-in parity with real MMDetection 3.3 (same random weights, same photographs).

Skipped unless ``WSZOO_MMDET_PARITY=1`` and mmdet/mmengine/mmcv are importable (they are not
wszoo dependencies: see parity/mmdet_parity.py for the separate environment). Run e.g.::

    WSZOO_MMDET_PARITY=1 PYTHONPATH=. /work/mmdet_venv/bin/python -m pytest -q tests/test_mmdet_parity.py -s

Each case builds MMDetection's detector from the mmdet package's own config, gives it seeded
random weights that yield many detections, converts them with wszoo, and compares
``mmdet.apis.inference_detector`` with the wszoo model: same count, same labels, scores and
boxes within 1e-4, binary masks identical up to a handful of pixels.

The training cases (``test_training_matches_mmdetection``, parity/mmdet_train_parity.py) feed
both a batch of two differently sized photographs with every candidate sampled and compare
each loss term (within 1e-4 relative) and the gradient of every trainable parameter (within
1e-3 relative norm difference).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path

import pytest

PARITY_DIR = Path(__file__).resolve().parent.parent / "parity"

pytestmark = [
    pytest.mark.mmdet,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("WSZOO_MMDET_PARITY") != "1", reason="set WSZOO_MMDET_PARITY=1 to run"),
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) is not None for m in ("mmdet", "mmengine", "mmcv", "skimage")),
        reason="needs mmdet 3.3, mmengine, mmcv(-lite) and scikit-image (see parity/mmdet_parity.py)",
    ),
]

SCORE_TOL = 1e-4
BOX_TOL = 1e-4
MASK_PIXEL_TOL = 5  # binary-mask pixels that may differ over all detections of an image


def _parity():
    if str(PARITY_DIR) not in sys.path:
        sys.path.insert(0, str(PARITY_DIR))
    import mmdet_parity

    return mmdet_parity


def _train_parity():
    _parity()
    import mmdet_train_parity

    return mmdet_train_parity


@functools.lru_cache(maxsize=1)
def _models(variant: str):
    parity = _parity()
    parity.setup()
    return parity.prepare_variant(variant, seed=0)


@pytest.mark.parametrize("image", ["astronaut", "crop"])
@pytest.mark.parametrize("variant", ["faster_r50_1x", "mask_r50_2x"])
def test_matches_mmdetection(variant, image, record_property):
    parity = _parity()
    mm_model, ws_model = _models(variant)
    report = parity.compare_image(variant, image, mm_model, ws_model, stages=False)
    parity.print_report(report)
    final = report.final
    for name in ("n_mm", "n_ws", "max_score_diff", "max_box_diff", "mask_pixels_diff"):
        record_property(name, getattr(final, name))
    assert final.n_mm > 0, "the random weights gave no detections: the check would be meaningless"
    assert final.n_mm == final.n_ws, f"detection count: mmdet {final.n_mm}, wszoo {final.n_ws}"
    assert final.labels_equal, "labels differ"
    assert final.max_score_diff <= SCORE_TOL, f"max |Δscore| = {final.max_score_diff}"
    assert final.max_box_diff <= BOX_TOL, f"max |Δbox| = {final.max_box_diff}"
    if final.mask_pixels_diff is not None:
        assert final.mask_pixels_diff <= MASK_PIXEL_TOL, (
            f"{final.mask_pixels_diff} mask pixels differ (of {final.mask_pixels_total} foreground pixels)"
        )


@pytest.mark.parametrize("variant", ["faster_r50_1x", "mask_r50_2x"])
def test_training_matches_mmdetection(variant, record_property):
    _parity().setup()
    train = _train_parity()
    report = train.compare_training(variant, seed=0)
    train.print_report(report)
    record_property("max_loss_diff", report.max_loss_diff)
    record_property("max_grad_diff", report.max_grad_diff)
    shared = report.counts["shared best anchors (image, anchor, gt, later gt)"]
    assert shared, "the batch no longer has an anchor that is the best match of two objects"
    sizes = report.counts["image sizes"]
    assert len(set(sizes)) == 2, "the batch needs two differently sized images"
    for name, mm, ws, rel in report.losses:
        assert rel <= train.LOSS_TOL, f"{name}: mmdet {mm}, wszoo {ws} ({rel:.2e} relative)"
    for name, norm, rel in report.grads:
        assert rel <= train.GRAD_TOL, f"gradient of {name}: {rel:.2e} relative (|g| {norm:.3e})"
