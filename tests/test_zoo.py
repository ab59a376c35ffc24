"""The zoo table against its sources, and every view of it (builders, hubconf, README) against the table.

The published rows are read from ``tests/data/published_gn_ws_table.md`` (MMDetection's table,
verbatim); the ImageNet backbones from ``tests/data/backbones.json``.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

import pytest
from reference_data import backbones as reference_backbones

import wszoo
from wszoo import builders, readme
from wszoo.arch import DetectorArch, ResNetArch
from wszoo.registry import list_models
from wszoo.zoo import ENTRIES, ZooEntry

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}


PUBLISHED = Path(__file__).resolve().parent / "data" / "published_gn_ws_table.md"

DETECTORS = [e for e in ENTRIES if e.task != "backbone" and e.has_weights]
BACKBONES = [e for e in ENTRIES if e.task == "backbone"]
_LINK = re.compile(r"\[(\w+)\]\((\S+?)\)")


# ---- the published table, parsed ----


def _cells(line: str) -> list[str]:
    # Cells are split on '|' but not on the escaped '\|' between the model and log links.
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _number(cell: str) -> Optional[float]:
    return None if cell == "-" else float(cell)


def _published_rows() -> list[dict]:
    rows, section, header = [], None, None
    for line in PUBLISHED.read_text(encoding="utf-8").splitlines():
        if line.strip() in ("Faster R-CNN", "Mask R-CNN"):
            section, header = line.strip(), None
        elif line.startswith("|") and header is None:
            header = _cells(line)
        elif line.startswith("|") and not set(line) <= set("|:- "):
            cells = dict(zip(header, _cells(line)))
            links = dict(_LINK.findall(cells["Config"] + " " + cells["Download"]))
            rows.append(
                {
                    "section": section,
                    "backbone": cells["Backbone"],
                    "style": cells["Style"],
                    "normalization": cells["Normalization"],
                    "lr_schedule": cells["Lr schd"],
                    "train_mem_gb": _number(cells["Mem (GB)"]),
                    "inf_fps": _number(cells["Inf time (fps)"]),
                    "box_ap": _number(cells["box AP"]),
                    "mask_ap": _number(cells["mask AP"]),
                    "config_url": links["config"],
                    "model_url": links["model"],
                    "log_url": links["log"],
                }
            )
    return rows


PUBLISHED_ROWS = _published_rows()


def _config_name(config_url: str) -> str:
    return unquote(urlsplit(config_url).path).rsplit("/", 1)[-1].removesuffix(".py")


def _arch_of(backbone: str, *, with_mask: bool) -> DetectorArch:
    match = re.fullmatch(r"([RX])-(\d+)(?:-(\d+)x(\d+)d)?-FPN", backbone)
    assert match, f"unexpected published backbone {backbone!r}"
    kind, depth, groups, width = match.groups()
    if kind == "X":
        return DetectorArch(depth=int(depth), groups=int(groups), base_width=int(width), with_mask=with_mask)
    return DetectorArch(depth=int(depth), with_mask=with_mask)


def test_published_table_parses_to_twelve_rows():
    assert len(PUBLISHED_ROWS) == 12
    assert {r["section"] for r in PUBLISHED_ROWS} == {"Faster R-CNN", "Mask R-CNN"}
    assert all(r["model_url"].endswith(".pth") and r["log_url"].endswith(".log.json") for r in PUBLISHED_ROWS)


def test_detector_entries_and_published_rows_are_one_to_one():
    by_config = {_config_name(r["config_url"]): r for r in PUBLISHED_ROWS}
    assert len(by_config) == len(PUBLISHED_ROWS)
    assert sorted(by_config) == sorted(e.mmdet_v2_config for e in DETECTORS)


@pytest.mark.parametrize("row", PUBLISHED_ROWS, ids=lambda r: _config_name(r["config_url"]))
def test_entry_equals_published_row(row):
    config = _config_name(row["config_url"])
    (entry,) = [e for e in ENTRIES if e.mmdet_v2_config == config]
    for field in (
        "backbone",
        "style",
        "normalization",
        "lr_schedule",
        "train_mem_gb",
        "inf_fps",
        "box_ap",
        "mask_ap",
        "config_url",
        "model_url",
        "log_url",
    ):
        assert getattr(entry, field) == row[field], f"{entry.name}.{field}"
    with_mask = row["section"] == "Mask R-CNN"
    assert entry.task == ("instance_segmentation" if with_mask else "object_detection")
    assert entry.arch == _arch_of(row["backbone"], with_mask=with_mask)
    assert entry.name == config.replace("-", "_")
    assert len(entry.classes) == 80 and entry.num_classes == 81


@pytest.mark.parametrize("entry", DETECTORS, ids=lambda e: e.name)
def test_detector_file_name_and_hash_derive_from_url(entry: ZooEntry):
    url = urlsplit(entry.model_url)
    assert url.scheme == "https" and url.netloc == "download.openmmlab.com"
    directory, file_name = url.path.rsplit("/", 1)
    assert entry.file_name == file_name
    # OpenMMLab's rule: <config>/<config>_<yyyymmdd>-<first 8 hex digits of sha256>.pth
    match = re.fullmatch(re.escape(entry.mmdet_v2_config) + r"_(\d{8})-([0-9a-f]{8})\.pth", file_name)
    assert match, file_name
    assert entry.sha256_prefix == match.group(2)
    assert directory.endswith("/" + entry.mmdet_v2_config)
    assert entry.log_url.rsplit("/", 1)[0] == entry.model_url.rsplit("/", 1)[0]
    assert entry.log_url.rsplit("/", 1)[1].startswith(f"{entry.mmdet_v2_config}_{match.group(1)}_")


def test_sha256_prefixes_are_unique():
    prefixes = [e.sha256_prefix for e in ENTRIES if e.has_weights]
    assert len(prefixes) == len(set(prefixes))


# ---- ImageNet backbones ----


@pytest.mark.parametrize("entry", BACKBONES, ids=lambda e: e.name)
def test_backbone_file_name_hash_rule(entry: ZooEntry):
    assert isinstance(entry.arch, ResNetArch)
    assert entry.openmmlab_key == f"open-mmlab://jhu/{entry.name}"
    assert entry.model_url == f"https://download.openmmlab.com/pretrain/third_party/{entry.file_name}"
    match = re.fullmatch(re.escape(entry.name) + r"-([0-9a-f]{8})\.pth", entry.file_name)
    assert match and entry.sha256_prefix == match.group(1)
    ws = entry.name.endswith("_gn_ws")
    assert entry.arch.weight_standardization == ws
    assert entry.normalization == ("GN+WS" if ws else "GN")
    assert entry.box_ap is None and entry.mask_ap is None and entry.classes == ()


def _reference_backbones() -> dict:
    return reference_backbones()


def test_backbones_match_reference_json():
    reference = _reference_backbones()
    assert len(reference) == 4
    by_key = {e.openmmlab_key: e for e in BACKBONES}
    for key, ref in reference.items():
        entry = by_key[ref["config_ref"]]
        assert ref["config_ref"] == f"open-mmlab://{key}"
        assert entry.model_url == ref["url"]
        assert entry.file_name == ref["file"]
        assert entry.sha256_prefix == ref["sha256_prefix_in_name"]
        spec = ref["mmdet_backbone"]
        expected = ResNetArch(
            depth=spec["depth"],
            groups=spec.get("groups", 1),
            base_width=spec.get("base_width", 64),
            weight_standardization=spec.get("conv_cfg", {}).get("type") == "ConvWS",
        )
        assert entry.arch == expected
        for config in ref["used_by"]:  # the detectors start from this backbone
            detector = wszoo.get_entry(config)
            assert detector.arch.backbone == entry.arch, config


# ---- views of the table ----


def test_builders_and_entries_are_one_to_one():
    names = [e.name for e in ENTRIES]
    assert len(names) == len(set(names))
    assert builders.__all__ == names
    public_functions = {
        n
        for n, f in vars(builders).items()
        if inspect.isfunction(f) and f.__module__ == builders.__name__ and not n.startswith("_")
    }
    # The lookups by name, exported by the package root only, and the hub aliases of hubconf.py.
    assert public_functions == set(names) | {"get_model", "get_model_info", "get_model_meta", "hub_aliases"}
    assert set(wszoo.__all__) >= set(names) | {"get_model", "get_model_info"}


def _load_hubconf():
    spec = importlib.util.spec_from_file_location("_wszoo_hubconf_under_test", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hubconf_entry_points_equal_registry_and_its_mmdet_aliases():
    hubconf = _load_hubconf()
    callables = {n for n in dir(hubconf) if not n.startswith("_") and callable(getattr(hubconf, n))}
    assert "dependencies" not in callables
    aliases = {a for e in ENTRIES for a in (e.mmdet_v2_config, e.mmdet_v3_config) if a}
    assert callables == set(list_models()) | aliases
    for entry in ENTRIES:
        for alias in (entry.mmdet_v2_config, entry.mmdet_v3_config):
            assert alias is None or getattr(hubconf, alias) is getattr(builders, entry.name)
    assert set(hubconf.dependencies) >= {"torch", "torchvision"}


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_builder_docstring_quotes_published_ap(entry: ZooEntry):
    doc = getattr(builders, entry.name).__doc__
    box = re.findall(r"box AP (\d+\.\d)", doc)
    mask = re.findall(r"mask AP (\d+\.\d)", doc)
    assert [float(x) for x in box] == ([entry.box_ap] if entry.box_ap is not None else [])
    assert [float(x) for x in mask] == ([entry.mask_ap] if entry.mask_ap is not None else [])
    assert entry.backbone in doc


def test_readme_model_table_and_layout_are_generated():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.render(text) == text, "README.md is stale: run `python -m wszoo.readme --write`"
    for entry in ENTRIES:
        assert f"| {entry.name} |" in text


def test_readme_render_replaces_a_stale_table_and_layout():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    stale = text.replace("| 39.7 |", "| 99.9 |", 1).replace("wszoo/modeling/rpn.py", "wszoo/heads.py", 1)
    assert stale != text
    assert readme.render(stale) == text
    with pytest.raises(ValueError, match="MODEL-TABLE"):
        readme.render("# no markers here\n")


def test_readme_check_and_write(tmp_path: Path, capsys):
    copy = tmp_path / "README.md"
    stale = (REPO / "README.md").read_text(encoding="utf-8").replace("| 39.7 |", "| 99.9 |", 1)
    copy.write_text(stale, encoding="utf-8")
    assert readme.main(["--check", "--readme", str(copy)]) == 1
    assert "stale: run `python -m wszoo.readme --write`" in capsys.readouterr().err
    assert copy.read_text(encoding="utf-8") == stale, "--check wrote"
    assert readme.main(["--write", "--readme", str(copy)]) == 0
    assert readme.main(["--check", "--readme", str(copy)]) == 0
    assert copy.read_text(encoding="utf-8") == (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_without_a_flag_or_with_help_writes_nothing(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default --readme is README.md in the current folder
    stale = (REPO / "README.md").read_text(encoding="utf-8").replace("| 39.7 |", "| 99.9 |", 1)
    (tmp_path / "README.md").write_text(stale, encoding="utf-8")
    assert readme.main([]) == 2
    assert "--check" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        readme.main(["--help"])
    assert info.value.code == 0
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == stale
    assert readme.main(["--check"]) == 1  # README.md of the current folder
    (tmp_path / "README.md").unlink()
    assert readme.main(["--check"]) == 2
    assert "--readme PATH" in capsys.readouterr().err


def test_python_m_wszoo_readme_runs_as_a_module(tmp_path: Path):
    copy = tmp_path / "README.md"
    copy.write_text((REPO / "README.md").read_text(encoding="utf-8").replace("| 39.7 |", "| 99.9 |", 1))
    command = [sys.executable, "-m", "wszoo.readme", "--check"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert result.returncode == 1 and "stale" in result.stderr
