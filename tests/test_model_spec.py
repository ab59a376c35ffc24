"""Weights written by ``wszoo train`` carry their model spec, and every reader honours it."""

from __future__ import annotations

import pytest
import torch
from synthetic_coco import SMALL_BUILD, make_dataset

import wszoo
from wszoo.model_spec import SpecMismatchError, make_spec, read_spec, spec_settings
from wszoo.training.api import run_eval
from wszoo.training.checkpoints import save_weights

MODEL = "faster_rcnn_r18_fpn_gn_ws"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    model = wszoo.get_model(MODEL, num_classes=4, **SMALL_BUILD)
    spec = make_spec(MODEL, num_classes=4, classes=["square", "disk", "triangle"], build_kwargs=SMALL_BUILD)
    return save_weights(model, tmp_path_factory.mktemp("w") / "final.safetensors", spec=spec), model


def test_the_spec_records_architecture_classes_and_settings(trained):
    path, _ = trained
    spec = read_spec(path)
    assert spec["name"] == MODEL and spec["arch"]["depth"] == 18 and spec["num_classes"] == 4
    assert spec["settings"]["image_scale"] == [80, 64] and spec["settings"]["rpn_post_nms_top_n"] == 20
    assert spec_settings(spec).image_scale == (80, 64)


def test_get_model_builds_trained_weights_as_trained_and_explicit_options_win(trained):
    path, source = trained
    model = wszoo.get_model(MODEL, weights=path)
    assert model.transform.scale == (80, 64) and model.roi_heads.box_predictor.cls_score.out_features == 4
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))
    assert wszoo.get_model(MODEL, weights=str(path), image_scale=(96, 72)).transform.scale == (96, 72)


def test_another_architecture_or_class_count_is_a_clear_error(trained):
    path, _ = trained
    with pytest.raises(SpecMismatchError, match="trained with `wszoo train`.*Name faster_rcnn_r18_fpn_gn_ws instead"):
        wszoo.get_model("mask_rcnn_r18_fpn_gn_ws", weights=path)
    with pytest.raises(SpecMismatchError, match="has 4 classes"):
        wszoo.get_model(MODEL, weights=path, num_classes=81)


def test_fine_tuning_trained_weights_as_another_architecture_is_refused(trained):
    from wszoo.training.api import build_training_model

    path, _ = trained
    with pytest.raises(SpecMismatchError, match="do not fit mask_rcnn_r18_fpn_gn_ws"):
        build_training_model("mask_rcnn_r18_fpn_gn_ws", dataset_classes=["a"], weights=str(path), progress=False)


@pytest.mark.slow
def test_eval_takes_trained_weights_with_or_without_the_model_name(trained, tmp_path):
    path, _ = trained
    images, ann = make_dataset(tmp_path / "data", num_images=1)
    common = dict(images=str(images), ann=str(ann), device="cpu", num_workers=0, progress=False)
    by_name = run_eval(model=MODEL, weights=str(path), results_file=str(tmp_path / "a.json"), **common)
    by_file = run_eval(weights=str(path), results_file=str(tmp_path / "b.json"), **common)
    assert by_name == by_file
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    with pytest.raises(SpecMismatchError, match="do not fit mask_rcnn_r18_fpn_gn_ws"):
        run_eval(model="mask_rcnn_r18_fpn_gn_ws", checkpoint=str(path), **common)


def test_predict_runs_trained_weights_at_their_scale_unless_told_otherwise(trained, monkeypatch, tmp_path):
    from wszoo.cli import main
    from wszoo.cli import predict as predict_cli
    from wszoo.inference.predict import PredictReport

    seen = []
    monkeypatch.setattr(
        predict_cli, "write_predictions", lambda predictor, *a, **kw: seen.append(predictor) or PredictReport()
    )
    path, _ = trained
    assert main(["predict", MODEL, str(tmp_path), "--weights", str(path), "--quiet"]) == 0
    assert main(["predict", MODEL, str(tmp_path), "--weights", str(path), "--image-scale", "96x72", "--quiet"]) == 0
    predictor, overridden = seen
    model = predictor.model
    assert model.transform.scale == (80, 64) and overridden.model.transform.scale == (96, 72)  # not 1333x800
    assert predictor.classes == ("square", "disk", "triangle") and model.rpn._post_nms_top_n["testing"] == 20
