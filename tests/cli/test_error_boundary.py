"""The CLI's error boundary and argument ranges: one line and exit status 2, or a traceback on request."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_files import hostile_checkpoint
from synthetic_coco import make_dataset

import wszoo
from wszoo import cli
from wszoo.checkpoint_io import UnsafeCheckpointError
from wszoo.cli import main
from wszoo.inference.predict import predict

DETECTOR = "faster_rcnn_r18_fpn_gn_ws"


@pytest.fixture
def hostile(tmp_path):
    """(a hostile last.pth, the marker file it would create if it ran)."""
    marker = tmp_path / "pwned"
    return hostile_checkpoint(tmp_path / "last.pth", marker), marker


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "data", num_images=2)


def one_error_line(capsys, command: str) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"wszoo {command}: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_hostile_last_pth_through_eval_is_refused_in_one_line(capsys, hostile, dataset, monkeypatch):
    monkeypatch.delenv("WSZOO_DEBUG", raising=False)
    path, marker = hostile
    images, ann = dataset
    code = main(["eval", "--checkpoint", str(path), "--images", str(images), "--ann", str(ann), "--device", "cpu"])
    assert code == 2
    line = one_error_line(capsys, "eval")
    assert f"refused to load {path}" in line and "never ran it" in line
    assert not marker.exists()


def test_hostile_last_pth_through_train_resume_is_refused_in_one_line(capsys, hostile, dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("WSZOO_DEBUG", raising=False)
    path, marker = hostile
    images, ann = dataset
    argv = ["train", "--model", DETECTOR, "--train-images", str(images), "--train-ann", str(ann)]
    argv += ["--output-dir", str(tmp_path / "run"), "--resume", str(path), "--device", "cpu", "--workers", "0"]
    argv += ["--image-scale", "64x48", "--no-progress"]
    assert main(argv) == 2
    line = one_error_line(capsys, "train")
    assert f"refused to load {path}" in line
    assert not marker.exists()
    assert not (tmp_path / "run" / "final.safetensors").exists()


def test_debug_flag_and_environment_show_the_traceback(hostile, dataset, monkeypatch):
    path, marker = hostile
    images, ann = dataset
    argv = ["eval", "--checkpoint", str(path), "--images", str(images), "--ann", str(ann), "--device", "cpu"]
    monkeypatch.delenv("WSZOO_DEBUG", raising=False)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        main(["--debug", *argv])
    monkeypatch.setenv("WSZOO_DEBUG", "1")
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        main(argv)
    assert not marker.exists()


def test_corrupt_checkpoint_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("WSZOO_DEBUG", raising=False)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["convert", str(broken), str(tmp_path / "out.safetensors")]) == 2
    assert "is corrupt or truncated" in one_error_line(capsys, "convert")


class _FakeCv2Error(Exception):
    pass


_FakeCv2Error.__module__ = "cv2"


@pytest.mark.parametrize(
    "error, shown",
    [
        (pickle.UnpicklingError("invalid load key, 'x'."), "invalid load key"),
        (_FakeCv2Error("OpenCV(4.10) resize.cpp:4152: error: (-215:Assertion failed) !ssize.empty()"), "resize.cpp"),
        (EOFError("Ran out of input"), "Ran out of input"),
        (PermissionError(13, "Permission denied", "/root/x"), "Permission denied"),
        (
            ValueError(
                "Caught ImageError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                '  File "x.py", line 1, in f\nwszoo.image_io.ImageError: /data/0002.png is a damaged or truncated image'
            ),
            "error: /data/0002.png is a damaged or truncated image",
        ),
    ],
)
def test_expected_errors_of_any_command_are_one_line(capsys, monkeypatch, error, shown):
    monkeypatch.delenv("WSZOO_DEBUG", raising=False)

    def fail(args):
        raise error

    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser(), fail))
    assert main(["info", "x"]) == 2
    assert shown in one_error_line(capsys, "info")


def _with_func(parser, func):
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            sub.set_defaults(func=func)
    return parser


def test_a_bug_keeps_its_traceback(monkeypatch):
    def fail(args):
        raise TypeError("a bug")

    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser(), fail))
    with pytest.raises(TypeError, match="a bug"):
        main(["info", "x"])


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["predict", DETECTOR, "x.png", "--score-threshold", "-1"],
            "argument --score-threshold: -1 is out of range: give a number in [0, 1]",
        ),
        (["predict", DETECTOR, "x.png", "--score-threshold", "1.5"], "in [0, 1]"),
        (["predict", DETECTOR, "x.png", "--score-threshold", "nan"], "not a finite number"),
        (
            ["predict", DETECTOR, "x.png", "--image-scale", "0", "0"],
            "argument --image-scale: 0 is out of range: give an integer >= 1",
        ),
        (
            ["predict", DETECTOR, "x.png", "--batch-size", "0"],
            "argument --batch-size: 0 is out of range: give an integer >= 1",
        ),
        (["predict", DETECTOR, "x.png", "--batch-size", "two"], "'two' is not an integer"),
        (
            ["eval", "--model", DETECTOR, "--images", "i", "--ann", "a", "--workers", "-1"],
            "argument --workers: -1 is out of range: give an integer >= 0",
        ),
        (["eval", "--model", DETECTOR, "--images", "i", "--ann", "a", "--batch-size", "0"], ">= 1"),
        (
            ["eval", "--model", DETECTOR, "--images", "i", "--ann", "a", "--image-scale", "0x800"],
            "argument --image-scale: 0 is out of range",
        ),
        (["eval", "--model", DETECTOR, "--images", "i", "--ann", "a", "--image-scale", "800"], "is not LONGxSHORT"),
        (["eval", "--model", DETECTOR, "--images", "i", "--ann", "a", "--score-thresh", "2"], "in [0, 1]"),
        (["convert", "/nonexistent/x.pth", "out.safetensors"], "/nonexistent/x.pth does not exist or is not a file"),
    ],
)
def test_out_of_range_arguments_are_refused_with_their_range(capsys, argv, expected):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and f"wszoo {argv[0]}: error:" in err


def test_predict_library_refuses_out_of_range_values(tmp_path):
    with pytest.raises(ValueError, match=r"score_threshold must be in \[0, 1\]"):
        predict(None, [], out_dir=tmp_path, classes=(), score_threshold=1.5)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        predict(None, [], out_dir=tmp_path, classes=(), batch_size=0)


def test_cli_module_runs_as_a_script_with_the_boundary(tmp_path):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"\x80\x02garbage")
    done = subprocess.run(
        [sys.executable, "-m", "wszoo.cli", "convert", str(broken), str(tmp_path / "o.safetensors")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("wszoo convert: error: ") and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(image_scale=(0, 0)), r"image_scale must be two integers >= 1"),
        (dict(image_scale=(1333,)), r"image_scale must be two integers >= 1"),
        (dict(score_thresh=1.5), r"score_thresh must be in \[0, 1\]"),
        (dict(nms_thresh=float("nan")), r"nms_thresh must be in \[0, 1\]"),
        (dict(detections_per_img=0), r"detections_per_img must be an integer >= 1"),
    ],
)
def test_builders_refuse_out_of_range_options(options, message):
    with pytest.raises(ValueError, match=message):
        wszoo.get_model(DETECTOR, **options)
