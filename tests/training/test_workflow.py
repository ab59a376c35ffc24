"""The fine-tuning workflow end to end, and the training loop's guard rails.

``wszoo train`` -> ``wszoo predict --weights`` / ``wszoo eval --weights`` / ``push-to-hub --weights``
with nothing but the weights file: its model spec brings the architecture, classes, image scale
and test settings. Besides: ``--seed`` reproduces a run, non-finite gradients or weights never
reach a checkpoint, invalid settings are refused before anything runs, a resumed run logs each
iteration once, ``--keep-checkpoints`` prunes old epochs, and written files are 0644.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from synthetic_coco import make_dataset
from torch import nn

import wszoo
from wszoo.checkpoint_io import read_safetensors
from wszoo.cli import main
from wszoo.model_spec import SPEC_KEY, SpecMismatchError, read_spec
from wszoo.training.checkpoints import load_trained
from wszoo.training.data import CocoDataset
from wszoo.training.engine import (
    NonFiniteGradientError,
    NonFiniteWeightsError,
    TrainConfig,
    train,
)
from wszoo.training.evaluate import STAT_NAMES, format_metrics

MODEL = "faster_rcnn_r18_fpn_gn_ws"


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _config(out, **kwargs) -> TrainConfig:
    defaults = dict(output_dir=str(out), batch_size=2, lr=0.01, warmup_iters=0, steps=(), num_workers=0, log_every=1)
    return TrainConfig(**{**defaults, "progress": False, **kwargs})


class _Scalar(nn.Module):
    """A stand-in detector: one weight, loss ``scale * weight``; ``on_grad`` may rewrite its gradient."""

    def __init__(self, scale: float = 1.0, on_grad=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.scale = scale
        self.calls = 0
        if on_grad is not None:
            self.weight.register_hook(lambda grad: on_grad(self.calls, grad))

    def forward(self, images, targets):
        self.calls += 1
        return {"loss": self.weight * self.scale}


@pytest.fixture(scope="module")
def four_images(tmp_path_factory):
    images, ann = make_dataset(tmp_path_factory.mktemp("data"), num_images=4)  # 2 batches of 2 per epoch
    return CocoDataset(images, ann, train=True)


# ---- guard rails ---------------------------------------------------------------------------------


def test_non_finite_gradients_stop_before_the_step_and_the_named_checkpoint_is_finite(tmp_path, four_images):
    # The loss stays finite; only the gradient of the 3rd iteration is infinite. Before this
    # check the step wrote inf into the weights, and the next checkpoint saved them.
    model = _Scalar(on_grad=lambda call, grad: grad * float("inf") if call == 3 else grad)
    config = _config(tmp_path / "out", epochs=3, checkpoint_every_iters=1)
    with pytest.raises(NonFiniteGradientError, match=r"iteration 3 \(epoch 2, batch 1\).*'weight'") as error:
        train(model, four_images, config)
    named = Path(str(error.value).split("last good checkpoint (finite weights) is ")[1].split(". ")[0])
    assert named == tmp_path / "out" / "last.pth"
    checkpoint = torch.load(named, map_location="cpu", weights_only=True)
    assert checkpoint["global_iter"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert torch.isfinite(model.weight)  # the step was not taken


def test_weights_that_overflow_are_never_checkpointed(tmp_path, four_images):
    # Finite loss (1e30) and gradient (1e30), but lr 1e30 sends the weight to -inf.
    config = _config(tmp_path / "out", epochs=1, lr=1e30, checkpoint_every_iters=1)
    with pytest.raises(NonFiniteWeightsError, match=r"none \(none was written yet\)"):
        train(_Scalar(scale=1e30), four_images, config)
    assert not (tmp_path / "out" / "last.pth").exists()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("epochs", 0, "epochs must be an integer >= 1"),
        ("epochs", -1, "epochs must be an integer >= 1"),
        ("batch_size", 0, "batch_size must be an integer >= 1"),
        ("lr", 0.0, "lr must be a finite number > 0"),
        ("lr", -0.1, "lr must be a finite number > 0"),
        ("steps", (3,), r"steps must be epochs in 1\.\.2"),
        ("num_workers", -1, "num_workers must be an integer >= 0"),
        ("warmup_iters", -1, "warmup_iters must be an integer >= 0"),
        ("keep_checkpoints", 0, "keep_checkpoints must be an integer >= 1"),
        ("flip_prob", 1.5, r"flip_prob must be a number in \[0, 1\]"),
    ],
)
def test_invalid_settings_are_refused_with_the_valid_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(output_dir=".", **{"epochs": 2, field: value})


def test_the_cli_refuses_invalid_settings_before_anything_runs(tmp_path, capsys):
    common = ["train", "--train-images", "x", "--train-ann", "x.json", "--model", MODEL]
    out = tmp_path / "out"
    for flag, value, message in (
        ("--epochs", "-1", "integer >= 1"),
        ("--batch-size", "0", "integer >= 1"),
        ("--lr", "0", "number > 0"),
        ("--workers", "-2", "integer >= 0"),
        ("--warmup-iters", "-5", "integer >= 0"),
        ("--keep-checkpoints", "0", "integer >= 1"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main([*common, "--output-dir", str(out), flag, value])
        err = capsys.readouterr().err  # the option, the value and the valid range
        assert exit_.value.code == 2 and f"argument {flag}" in err and value in err and message in err, err
    # Steps beyond the epochs: TrainConfig refuses them, before the dataset is even read.
    assert main([*common, "--output-dir", str(out), "--epochs", "2", "--steps", "3"]) == 2
    assert "steps must be epochs in 1..2" in capsys.readouterr().err
    assert not out.exists()


def test_resume_after_a_kill_logs_each_iteration_once_and_old_epochs_are_pruned(tmp_path, four_images, capsys):
    out = tmp_path / "out"
    train(_Scalar(), four_images, _config(out, epochs=3, max_iters=2))  # checkpoint at iteration 2
    shutil.copy(out / "last.pth", tmp_path / "at_2.pth")
    train(_Scalar(), four_images, _config(out, epochs=3, max_iters=3, resume=True))  # logs and checkpoints 3
    # A kill after iteration 3 was logged but before it was checkpointed, mid-line:
    shutil.copy(tmp_path / "at_2.pth", out / "last.pth")
    with open(out / "log.jsonl", "a") as fh:
        fh.write('{"mode": "train", "glo')
    result = train(_Scalar(), four_images, _config(out, epochs=3, resume=True, keep_checkpoints=2, progress=True))
    assert result.finished and result.global_iter == 6
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["global_iter"] for r in records if r["mode"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in out.glob("epoch_*.safetensors")) == ["epoch_2.safetensors", "epoch_3.safetensors"]
    bar = capsys.readouterr().err
    assert "loss=" in bar and "lr=" in bar  # the progress bar shows both
    for name in ("epoch_3.safetensors", "final.safetensors", "last.pth", "log.jsonl"):
        assert (out / name).stat().st_mode & 0o777 == _file_mode(), name


def test_metrics_print_as_a_table():
    metrics = {"bbox": dict.fromkeys(STAT_NAMES, 0.5), "segm": dict.fromkeys(STAT_NAMES, -1.0)}
    lines = format_metrics(metrics).splitlines()
    assert len(lines) == 13 and lines[0].split()[-2:] == ["bbox", "segm"]
    assert lines[1].split() == ["AP", "0.50:0.95", "all", "100", "0.500", "-1.000"]
    assert lines[7].split()[:4] == ["AR1", "0.50:0.95", "all", "1"]


# ---- train -> predict / eval / push-to-hub -------------------------------------------------------


def _train(images, ann, out, seed: int) -> None:
    argv = ["train", "--train-images", str(images), "--train-ann", str(ann), "--model", MODEL]
    argv += ["--output-dir", str(out), "--epochs", "1", "--batch-size", "2", "--lr", "0.01", "--warmup-iters", "1"]
    argv += ["--workers", "0", "--device", "cpu", "--seed", str(seed), "--no-progress"]
    argv += ["--image-scale", "80x64", "--box-batch-size-per-image", "16", "--rpn-post-nms-top-n-test", "20"]
    assert main(argv) == 0


@pytest.mark.slow
def test_train_then_predict_eval_and_push_with_only_the_weights(tmp_path, capsys, monkeypatch):
    train_images, train_ann = make_dataset(tmp_path / "train", num_images=3)
    data = json.loads(train_ann.read_text())  # keep the two 64x64 images: one batch, one iteration per epoch
    data["images"] = [i for i in data["images"] if i["width"] == 64]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in {i["id"] for i in data["images"]}]
    train_ann.write_text(json.dumps(data))
    held_images, held_ann = make_dataset(tmp_path / "held", num_images=3, seed=7)

    # The same --seed twice: the same weights, byte for byte.
    _train(train_images, train_ann, tmp_path / "a", seed=3)
    _train(train_images, train_ann, tmp_path / "b", seed=3)
    weights = tmp_path / "a" / "final.safetensors"
    assert weights.read_bytes() == (tmp_path / "b" / "final.safetensors").read_bytes()
    assert weights.stat().st_mode & 0o777 == _file_mode()
    assert "weights: " in capsys.readouterr().out
    spec = read_spec(weights)
    assert spec["classes"] == ["square", "disk", "triangle"] and spec["settings"]["image_scale"] == [80, 64]

    # get_model with nothing but the file: the trained scale, class count and test settings.
    model = wszoo.get_model(MODEL, weights=weights)
    assert model.transform.scale == (80, 64) and model.roi_heads.box_predictor.cls_score.out_features == 4
    assert model.rpn._post_nms_top_n["testing"] == 20
    with pytest.raises(SpecMismatchError, match="do not fit mask_rcnn_r18_fpn_gn_ws"):
        wszoo.get_model("mask_rcnn_r18_fpn_gn_ws", weights=weights)

    # predict with only --weights (the threshold is the model's, to compare every detection).
    out = tmp_path / "predictions"
    argv = ["predict", MODEL, str(held_images), "--weights", str(weights), "--out", str(out)]
    assert main([*argv, "--score-threshold", "0.05", "--batch-size", "1", "--quiet"]) == 0
    assert main(["predict", "mask_rcnn_r18_fpn_gn_ws", str(held_images), "--weights", str(weights), "--quiet"]) == 2
    assert "do not fit mask_rcnn_r18_fpn_gn_ws" in capsys.readouterr().err

    # eval --model X --weights F (which failed with raw load_state_dict errors) prints the table.
    argv = ["eval", "--model", MODEL, "--weights", str(weights), "--images", str(held_images), "--ann", str(held_ann)]
    assert (
        main([*argv, "--device", "cpu", "--workers", "0", "--no-progress", "--results", str(tmp_path / "e.json")]) == 0
    )
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["metric", "IoU", "area", "maxDets", "bbox"] and table[2].startswith("AP50")
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert evaluated

    names = {c["id"]: c["name"] for c in json.loads(held_ann.read_text())["categories"]}
    ids = {Path(i["file_name"]).stem: i["id"] for i in json.loads(held_ann.read_text())["images"]}
    predicted = []
    for path in sorted(out.glob("*.json")):
        for d in json.loads(path.read_text())["detections"]:
            x1, y1, x2, y2 = d["box"]
            # eval's results JSON rounds scores to 5 decimals (and boxes to 3): the same here
            predicted.append((ids[path.stem], d["class"], round(d["score"], 5), [x1, y1, x2 - x1, y2 - y1]))
    expected = [(r["image_id"], names[r["category_id"]], r["score"], r["bbox"]) for r in evaluated]
    assert len(predicted) == len(expected)
    order = lambda r: (r[0], -r[2], r[1], [round(v) for v in r[3]])  # noqa: E731
    for got, want in zip(sorted(predicted, key=order), sorted(expected, key=order)):
        assert got[:3] == want[:3]
        assert max(abs(a - b) for a, b in zip(got[3], want[3])) <= 2e-3

    # push-to-hub --weights: the staged upload carries the classes, the spec and the trained settings.
    staged = {}

    class Api:
        def __init__(self, **kwargs) -> None:
            pass

        def create_repo(self, repo_id, **kwargs) -> None:
            staged["repo"] = repo_id

        def upload_folder(self, *, folder_path, **kwargs):
            staged.update({p.name: p.read_bytes() for p in Path(folder_path).iterdir()})
            return type("Info", (), {"commit_url": "http://127.0.0.1/commit", "pr_url": None})()

    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    assert main(["push-to-hub", MODEL, "--repo-id", "me/shapes", "--weights", str(weights), "--quiet"]) == 0
    config = json.loads(staged["config.json"])
    assert config["classes"] == ["square", "disk", "triangle"] and config["num_classes"] == 4
    assert config["preprocessing"]["resize"]["scale"] == [80, 64]
    assert config["test_settings"]["rpn_post_nms_top_n"] == 20
    (tmp_path / "model.safetensors").write_bytes(staged["model.safetensors"])
    state, metadata = read_safetensors(tmp_path / "model.safetensors")
    assert json.loads(metadata[SPEC_KEY])["classes"] == spec["classes"]
    reference, _ = load_trained(weights)
    assert all(torch.equal(state[k], v) for k, v in reference.state_dict().items())
    assert main(["push-to-hub", "mask_rcnn_r18_fpn_gn_ws", "--repo-id", "me/x", "--weights", str(weights)]) == 2
