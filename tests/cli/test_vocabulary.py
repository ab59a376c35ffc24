"""One CLI vocabulary: help for every argument, a description for every command, shared options
that mean the same everywhere, task aliases, ``list --exclude``, ``info`` as data, closed pipes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

import wszoo
from wszoo.arch import DetectorArch, ResNetArch
from wszoo.cli import BROKEN_PIPE_STATUS, build_parser, main
from wszoo.cli import train as train_cli
from wszoo.cli.arguments import DeprecatedAlias
from wszoo.registry import TASK_ALIASES, entry_info, list_models

REPO = Path(__file__).resolve().parents[2]


def commands(parser: argparse.ArgumentParser, path: str = "wszoo") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``(command path, parser)`` of ``parser`` and every subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{path} {name}")


def test_every_positional_and_option_of_every_command_has_help():
    missing = []
    for path, parser in commands(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            if action.help == argparse.SUPPRESS:
                if not isinstance(action, DeprecatedAlias):
                    missing.append(f"{path} {name}: hidden but not a deprecated alias")
            elif not (action.help or "").strip():
                missing.append(f"{path} {name}")
    assert not missing, "arguments without help text:\n" + "\n".join(missing)


def test_every_command_says_what_it_does():
    parser = build_parser()
    found = dict(commands(parser))
    assert {"wszoo list", "wszoo info", "wszoo convert", "wszoo train", "wszoo eval", "wszoo export"} <= set(found)
    for path, command in found.items():
        assert (command.description or "").strip(), f"`{path} --help` has no description"
    # the summaries listed by `wszoo --help` are there too
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert all((choice.help or "").strip() for choice in sub._choices_actions)


def test_help_shows_the_description_and_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["list", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "List the zoo's models" in out and "--exclude PATTERN" in out
    assert "examples:\n  wszoo list 'mask_rcnn_*' --exclude" in out  # example lines kept as written
    assert "detection, det" in out  # the task aliases are documented


# ---- shared options ----


@pytest.mark.parametrize("command", ["train", "eval"])
def test_score_threshold_and_its_deprecated_spelling(capsys, command):
    required = {
        "train": ["--train-images", "i", "--train-ann", "a", "--model", "m", "--output-dir", "o"],
        "eval": ["--images", "i", "--ann", "a"],
    }[command]
    parser = build_parser()
    args = parser.parse_args([command, *required, "--score-threshold", "0.2"])
    assert args.score_thresh == 0.2 and capsys.readouterr().err == ""
    args = parser.parse_args([command, *required, "--score-thresh", "0.3"])
    assert args.score_thresh == 0.3
    assert capsys.readouterr().err == f"wszoo {command}: --score-thresh is deprecated; use --score-threshold\n"
    assert parser.parse_args([command, *required]).score_thresh is None  # the model's default applies
    with pytest.raises(SystemExit):
        parser.parse_args([command, *required, "--score-thresh", "1.5"])
    assert "in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "--score-threshold THRESHOLD" in out and "--score-thresh " not in out


# Commands that draw progress bars (downloads, data loading) must offer --no-progress too.
PROGRESS_COMMANDS = {
    "wszoo download",
    "wszoo predict",
    "wszoo push-to-hub",
    "wszoo train",
    "wszoo eval",
    "wszoo export",
}


@pytest.mark.parametrize("path", [path for path, _ in commands(build_parser())])
def test_quiet_and_no_progress_mean_the_same_in_every_command(path):
    parser = dict(commands(build_parser()))[path]
    options = {o: a for a in parser._actions for o in a.option_strings}
    if "--quiet" in options:
        assert options["--quiet"].help.startswith("print nothing but errors")
        assert options["-q"] is options["--quiet"]
    if "--no-progress" in options:
        assert options["--no-progress"].help.startswith("no progress bars")
        assert "--quiet" in options, "--no-progress without --quiet"
    if path in PROGRESS_COMMANDS:
        assert "--no-progress" in options and "--quiet" in options


@pytest.mark.parametrize(
    "flags, progress, printed",
    [([], True, True), (["--no-progress"], False, True), (["--quiet"], False, False), (["-q"], False, False)],
)
def test_eval_progress_and_quiet(monkeypatch, capsys, flags, progress, printed):
    seen = {}

    def run_eval(**kwargs):
        seen.update(kwargs)
        return {"bbox_mAP": 0.5}

    monkeypatch.setattr(train_cli, "run_eval", run_eval)
    assert main(["eval", "--images", "i", "--ann", "a", "--json", *flags]) == 0
    assert seen["progress"] is progress
    out, err = capsys.readouterr()
    assert (json.loads(out) == {"bbox_mAP": 0.5}) if printed else out == ""
    assert err == ""


# ---- list and info ----


@pytest.mark.parametrize("alias, task", sorted(TASK_ALIASES.items()))
def test_task_aliases(capsys, alias, task):
    assert list_models(task=alias) == list_models(task=task) != []
    assert main(["list", "--task", alias, "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == list_models(task=task)


def test_list_models_rejects_an_unknown_task_in_words():
    with pytest.raises(ValueError, match=r"unknown task 'cars': give one of object_detection, instance_segmentation"):
        list_models(task="cars")


def test_list_exclude_is_repeatable(capsys):
    expected = [n for n in list_models("mask_rcnn_*") if "_20_23_24e_" not in n and "_r18_" not in n]
    assert list_models("mask_rcnn_*", exclude=["*_20_23_24e_*", "*_r18_*"]) == expected
    assert main(["list", "mask_rcnn_*", "--exclude", "*_20_23_24e_*", "--exclude", "*_r18_*", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == expected
    assert len(expected) == 4


@pytest.mark.parametrize("name", ["mask_rcnn_x101_32x4d_fpn_gn_ws_all_2x_coco", "resnext50_32x4d_gn"])
def test_info_is_data_with_each_field_once(capsys, name):
    entry = wszoo.get_entry(name)
    assert main(["info", name]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == entry_info(entry)
    arch_type = DetectorArch if entry.task != "backbone" else ResNetArch
    assert isinstance(info["arch"], dict) and arch_type(**info["arch"]) == entry.arch
    assert {"schedule", "url", "aliases"}.isdisjoint(info)
    strings = [json.dumps(v) for v in info.values() if isinstance(v, (str, list)) and v]
    assert len(strings) == len(set(strings)), "two fields of `wszoo info` hold the same value"
    assert info["lr_schedule"] == entry.lr_schedule and info["model_url"] == entry.model_url
    assert list(info)[-1] == "classes"


# ---- a closed pipe ----


def _run_into_a_closed_pipe(*argv: str) -> subprocess.CompletedProcess:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: every write gets EPIPE
    try:
        return subprocess.run(
            [sys.executable, "-m", "wszoo.cli", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
            timeout=300,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("argv", [["list"], ["info", "mask_rcnn_r50_fpn_gn_ws_all_2x_coco"], ["--help"]])
def test_a_closed_pipe_ends_quietly_with_status_141(argv):
    done = _run_into_a_closed_pipe(*argv)
    assert done.stderr == ""
    assert done.returncode == BROKEN_PIPE_STATUS == 141


def test_piped_into_head_prints_the_first_line_and_no_traceback():
    done = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m wszoo.cli list | head -1"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.startswith("| name | task |") and len(done.stdout.splitlines()) == 1
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr
