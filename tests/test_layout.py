"""The package's shape: one-way imports, optional dependencies kept out, old paths still working,
one settings object and one list of class-specific tensors."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import wszoo
from wszoo import DEFAULT_SETTINGS, InferenceSettings
from wszoo._deprecated import MOVED
from wszoo.conversion.convert import ROW_OPS
from wszoo.modeling.detector import CLASS_TENSORS, build_detector, class_specific_keys
from wszoo.training.finetune import CLASS_SPECIFIC_KEYS

REPO = Path(__file__).resolve().parent.parent


def _check_imports():
    spec = importlib.util.spec_from_file_location("check_imports", REPO / "tools" / "check_imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_import_cycle_and_no_optional_dependency_on_import():
    result = subprocess.run([sys.executable, "tools/check_imports.py"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no cycle" in result.stdout


def test_the_import_check_finds_a_cycle_and_a_nested_import(tmp_path: Path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("from .c import x\n")
    (package / "c.py").write_text(
        "def x():\n    import json\n    import cv2\n    return json\n\n\ndef y():\n    from .a import b\n"
    )
    checker = _check_imports()
    graph, nested = checker.import_graph(tmp_path, "pkg")
    assert checker.find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    # json is required (stdlib): flagged; cv2 is optional: allowed inside a function.
    assert any("import json" in line for line in nested) and not any("cv2" in line for line in nested)
    assert any("from .a import b" in line for line in nested)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_import_paths_work_with_a_deprecation_warning(old: str):
    module = importlib.import_module(old)
    names = [n for t in MOVED[old] for n in getattr(importlib.import_module(t), "__all__", [])]
    assert names, f"{old}: its new modules export nothing"
    name = names[0]
    owner = next(importlib.import_module(t) for t in MOVED[old] if name in importlib.import_module(t).__all__)
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to"):
        value = getattr(module, name)
    assert value is getattr(owner, name)
    with pytest.raises(AttributeError, match="no attribute"):
        module.surely_not_a_name  # noqa: B018


def test_the_usual_old_imports():
    with pytest.warns(DeprecationWarning):
        from wszoo.layers import WSConv2d
    with pytest.warns(DeprecationWarning):
        from wszoo.models import build_detector as old_build
    with pytest.warns(DeprecationWarning):
        from wszoo.engine import load_trained
    with pytest.warns(DeprecationWarning):
        from wszoo.cli import model_table
    from wszoo.modeling.layers import WSConv2d as new_conv
    from wszoo.registry import model_table as new_table
    from wszoo.training.checkpoints import load_trained as new_load

    assert (WSConv2d, old_build, load_trained, model_table) == (new_conv, build_detector, new_load, new_table)


def test_importing_the_package_warns_nothing():
    code = "import warnings; warnings.simplefilter('error', DeprecationWarning); import wszoo, wszoo.cli"
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_one_settings_object_drives_builder_transform_and_hub_config():
    from wszoo.hub.hf_publish import hub_config

    model = build_detector(arch=wszoo.get_entry("faster_rcnn_r18_fpn_gn_ws").arch)
    heads, transform = model.roi_heads, model.transform
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (
        DEFAULT_SETTINGS.score_thresh,
        DEFAULT_SETTINGS.nms_thresh,
        DEFAULT_SETTINGS.detections_per_img,
    )
    assert transform.scale == DEFAULT_SETTINGS.image_scale
    assert transform.size_divisor == DEFAULT_SETTINGS.pad_size_divisor
    assert tuple(transform.mean.flatten().tolist()) == pytest.approx(DEFAULT_SETTINGS.image_mean)
    assert model.rpn.nms_thresh == DEFAULT_SETTINGS.rpn_nms_thresh
    assert model.rpn._post_nms_top_n["testing"] == DEFAULT_SETTINGS.rpn_post_nms_top_n

    entry = wszoo.get_entry("mask_rcnn_r50_fpn_gn_ws_all_2x_coco")
    config = hub_config(entry, {})
    assert config["preprocessing"]["resize"]["scale"] == list(DEFAULT_SETTINGS.image_scale)
    assert config["test_settings"]["mask_thresh"] == DEFAULT_SETTINGS.mask_thresh
    other = InferenceSettings(image_scale=(640, 384), score_thresh=0.3)
    config = hub_config(entry, {}, settings=other)
    assert config["preprocessing"]["resize"]["scale"] == [640, 384] and config["test_settings"]["score_thresh"] == 0.3
    with pytest.raises(AttributeError):
        DEFAULT_SETTINGS.score_thresh = 0.5  # frozen: a default cannot drift at run time


def test_cli_defaults_come_from_the_settings():
    from wszoo.cli import build_parser
    from wszoo.model_spec import spec_settings

    args = build_parser().parse_args(["predict", "faster_rcnn_r18_fpn_gn_ws", "x.jpg"])
    assert args.image_scale is None  # not given: the scale trained weights record, else the settings'
    assert spec_settings(None) is DEFAULT_SETTINGS
    assert spec_settings({"build_kwargs": {"image_scale": [80, 64]}}).image_scale == (80, 64)


def test_one_list_of_class_specific_tensors():
    keys = class_specific_keys()
    assert keys == CLASS_SPECIFIC_KEYS
    model = build_detector(arch=wszoo.get_entry("mask_rcnn_r18_fpn_gn_ws").arch, num_classes=5)
    state = model.state_dict()
    for key in keys:
        rows = next(c.rows_per_class for c in CLASS_TENSORS if key.startswith(c.module))
        assert state[key].shape[0] == 5 * rows, key
    # Conversion has exactly one row rule per class-specific layer.
    import re

    assert len(ROW_OPS) == len(CLASS_TENSORS)
    assert all(sum(bool(re.fullmatch(p, k)) for p, _ in ROW_OPS) == 1 for k in keys)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not [k for k in state if any(re.fullmatch(p, k) for p, _ in ROW_OPS) and k not in keys]
