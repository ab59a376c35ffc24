"""The ``wszoo`` command, called in-process; checkpoints are served on 127.0.0.1.

download / verify / import-weights run against a fake zoo entry injected into the registry,
whose checkpoint is a small random payload named with its own sha256 prefix.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_server import Server, serve  # noqa: E402

from wszoo.arch import DetectorArch  # noqa: E402
from wszoo.cli import main  # noqa: E402
from wszoo.coco import COCO_CLASSES  # noqa: E402
from wszoo.registry import get_entry, list_models  # noqa: E402
from wszoo.zoo import ZooEntry  # noqa: E402

FAKE = "fake_rcnn_r18_fpn_gn_ws_all_1x_coco"
PAYLOAD = random.Random(20240917).randbytes(96 * 1024)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
FILE = f"{FAKE}_20240917-{DIGEST[:8]}.pth"
URL_PATH = f"/mmdetection/v2.0/gn%2Bws/{FAKE}/{FILE}"

JSON_KEYS = {
    "name": "name",
    "task": "task",
    "backbone": "backbone",
    "schedule": "lr_schedule",
    "url": "model_url",
    "file_name": "file_name",
    "sha256_prefix": "sha256_prefix",
    "box_ap": "box_ap",
    "mask_ap": "mask_ap",
    "train_mem_gb": "train_mem_gb",
    "inf_fps": "inf_fps",
    "config_url": "config_url",
    "log_url": "log_url",
}


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WSZOO_MIRROR", raising=False)
    monkeypatch.setenv("WSZOO_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture
def server() -> Iterator[Server]:
    with serve({URL_PATH: PAYLOAD}) as running:
        yield running


@pytest.fixture
def fake(register_entry, server: Server) -> ZooEntry:
    entry = ZooEntry(
        name=FAKE,
        task="object_detection",
        arch=DetectorArch(depth=18),
        backbone="R-18-FPN",
        lr_schedule="1x",
        box_ap=12.3,
        model_url=server.url_for(URL_PATH),
        classes=COCO_CLASSES,
    )
    assert entry.file_name == FILE and entry.sha256_prefix == DIGEST[:8]
    return register_entry(entry)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_names(text: str) -> list[str]:
    return [line.split("|")[1].strip() for line in text.splitlines()[2:] if line.startswith("|")]


# ---- list / info ----


def test_list_table_has_every_name(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert out.splitlines()[0].startswith("| name | task |")
    assert table_names(out) == list_models()


def test_list_json_equals_registry(capsys):
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    records = json.loads(out)
    assert [r["name"] for r in records] == list_models()
    for record in records:
        entry = get_entry(record["name"])
        assert set(JSON_KEYS) <= set(record)
        for key, attr in JSON_KEYS.items():
            assert record[key] == getattr(entry, attr), f"{entry.name}: {key}"
        assert record["aliases"] == list(entry.aliases)
    published = [r for r in records if r["config_url"]]
    assert len(published) == 12 and all(r["url"].endswith(r["file_name"]) for r in published)


def test_list_pattern_and_task(capsys):
    expected = list_models("mask_rcnn_*", task="instance_segmentation")
    assert len(expected) == 9
    code, out, _ = run(capsys, "list", "mask_rcnn_*", "--task", "instance_segmentation")
    assert code == 0 and table_names(out) == expected
    code, out, _ = run(capsys, "list", "mask_rcnn_*", "--task", "instance_segmentation", "--json")
    assert [r["name"] for r in json.loads(out)] == expected
    code, out, _ = run(capsys, "list", "mask_rcnn_*", "--task", "backbone")
    assert code == 0 and table_names(out) == []


def test_list_backbone_and_with_weights(capsys):
    code, out, _ = run(capsys, "list", "--backbone", "R-18*")
    assert table_names(out) == ["faster_rcnn_r18_fpn_gn_ws", "mask_rcnn_r18_fpn_gn_ws"]
    code, out, _ = run(capsys, "list", "--backbone", "R-18*", "--with-weights")
    assert code == 0 and table_names(out) == []
    code, out, _ = run(capsys, "list", "--with-weights", "--json")
    assert [r["name"] for r in json.loads(out)] == list_models(has_weights=True)


def test_list_rejects_an_invalid_task(capsys):
    with pytest.raises(SystemExit) as info:
        main(["list", "--task", "detections"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown task 'detections'" in err and "object_detection" in err and "detection (object_detection)" in err


def test_list_shows_injected_entries(capsys, fake: ZooEntry):
    code, out, _ = run(capsys, "list", "fake_*", "--json")
    assert code == 0
    (record,) = json.loads(out)
    assert record["name"] == FAKE and record["url"] == fake.model_url and record["sha256_prefix"] == DIGEST[:8]


@pytest.mark.parametrize(
    "name",
    [
        "mask_rcnn_r50_fpn_gn_ws_all_2x_coco",
        "mask-rcnn_r50_fpn_gn-ws-all_2x_coco",
        "configs/gn+ws/mask_rcnn_r50_fpn_gn_ws-all_2x_coco.py",
    ],
)
def test_info_by_name_and_alias(capsys, name: str):
    code, out, _ = run(capsys, "info", name)
    assert code == 0
    info = json.loads(out)
    entry = get_entry("mask_rcnn_r50_fpn_gn_ws_all_2x_coco")
    assert info["name"] == entry.name
    assert (info["box_ap"], info["mask_ap"], info["sha256_prefix"]) == (40.6, 36.6, "16acb762")
    assert info["num_classes"] == 81 and info["classes"] == list(entry.classes)
    assert info["arch"] == {
        "depth": 50,
        "groups": 1,
        "base_width": 64,
        "with_mask": True,
        "weight_standardization": True,
    }
    assert DetectorArch(**info["arch"]) == entry.arch
    assert (info["mmdet_v2_config"], info["mmdet_v3_config"]) == (entry.mmdet_v2_config, entry.mmdet_v3_config)


def test_info_unknown_name(capsys):
    code, out, err = run(capsys, "info", "mask_rcnn_r50_fpn_gn_ws_2x")
    assert code == 2 and out == ""
    assert "unknown model 'mask_rcnn_r50_fpn_gn_ws_2x'" in err
    assert "mask_rcnn_r50_fpn_gn_ws_all_2x_coco" in err and "wszoo list" in err


# ---- download / verify ----


def test_download_fetches_and_verifies(capsys, fake: ZooEntry, server: Server, cache: Path):
    code, out, _ = run(capsys, "download", FAKE, "--cache-dir", str(cache), "--no-progress")
    assert code == 0
    assert Path(out.strip()) == cache / FILE
    assert (cache / FILE).read_bytes() == PAYLOAD
    assert len(server.requests_for(URL_PATH)) == 1
    code, out, _ = run(capsys, "download", FAKE, "--cache-dir", str(cache), "--no-progress")
    assert code == 0 and Path(out.strip()) == cache / FILE
    assert len(server.requests_for(URL_PATH)) == 1, "a cached checkpoint was fetched again"


def test_download_quiet_prints_nothing_and_no_progress_only_hides_the_bar(capsys, fake, cache: Path):
    code, out, err = run(capsys, "download", FAKE, "--cache-dir", str(cache), "--quiet")
    assert (code, out, err) == (0, "", "")
    assert (cache / FILE).read_bytes() == PAYLOAD
    (cache / FILE).unlink()
    code, out, err = run(capsys, "download", FAKE, "--cache-dir", str(cache), "--no-progress")
    assert code == 0 and Path(out.strip()) == cache / FILE and err == ""
    (cache / FILE).unlink()
    code, out, err = run(capsys, "download", FAKE, "--cache-dir", str(cache))
    assert code == 0 and Path(out.strip()) == cache / FILE
    assert "fake_rcnn" in err or "%" in err  # the progress bar, on stderr


def test_download_uses_wszoo_cache_by_default(capsys, fake: ZooEntry, tmp_path: Path):
    code, out, _ = run(capsys, "download", FAKE, "--no-progress")
    assert code == 0 and Path(out.strip()) == tmp_path / "default-cache" / FILE


def test_download_of_corrupt_served_file_fails_and_caches_nothing(capsys, fake, server: Server, cache: Path):
    server.add(URL_PATH, PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 1]))
    code, _, err = run(capsys, "download", FAKE, "--cache-dir", str(cache), "--no-progress")
    assert code == 2
    assert "sha256" in err.lower() or DIGEST[:8] in err
    assert not (cache / FILE).exists()


def test_download_errors(capsys, cache: Path):
    code, _, err = run(capsys, "download", "no_such_model", "--cache-dir", str(cache))
    assert code == 2 and "wszoo list" in err
    code, _, err = run(capsys, "download", "faster_rcnn_r18_fpn_gn_ws", "--cache-dir", str(cache))
    assert code == 2 and "no published weights" in err
    assert not cache.exists()


def test_verify_passes_then_fails_on_a_flipped_byte(capsys, fake: ZooEntry, cache: Path):
    assert run(capsys, "download", FAKE, "--cache-dir", str(cache), "--no-progress")[0] == 0
    code, out, _ = run(capsys, "verify", FAKE, "--cache-dir", str(cache))
    assert code == 0 and out.startswith("ok") and DIGEST[:16] in out

    cached = cache / FILE
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0x40
    cached.write_bytes(bytes(data))
    code, out, _ = run(capsys, "verify", FAKE, "--cache-dir", str(cache))
    assert code == 1
    assert out.startswith("FAIL") and str(cached) in out and f"expected {DIGEST[:8]}" in out


def test_verify_all(capsys, fake: ZooEntry, cache: Path):
    code, out, _ = run(capsys, "verify", "--all", "--cache-dir", str(cache))
    assert code == 0 and "no cached checkpoints" in out

    assert run(capsys, "download", FAKE, "--cache-dir", str(cache), "--no-progress")[0] == 0
    code, out, _ = run(capsys, "verify", "--all", "--cache-dir", str(cache))
    assert code == 0
    assert out.splitlines() == [line for line in out.splitlines() if line.startswith("ok")]
    assert len(out.splitlines()) == 1 and FILE in out

    (cache / FILE).write_bytes(PAYLOAD + b"\0")
    code, out, _ = run(capsys, "verify", "--all", "--cache-dir", str(cache))
    assert code == 1 and out.startswith("FAIL") and FILE in out


def test_verify_missing_file_says_how_to_get_it(capsys, fake: ZooEntry, cache: Path):
    code, out, _ = run(capsys, "verify", FAKE, "--cache-dir", str(cache))
    assert code == 1 and "missing" in out and f"wszoo download {FAKE}" in out


def test_verify_a_file_path(capsys, fake: ZooEntry, tmp_path: Path):
    good = tmp_path / "elsewhere" / FILE
    good.parent.mkdir()
    good.write_bytes(PAYLOAD)
    code, out, _ = run(capsys, "verify", str(good))
    assert code == 0 and out.startswith("ok")
    stranger = tmp_path / "elsewhere" / "random-12345678.pth"
    stranger.write_bytes(PAYLOAD)
    code, out, _ = run(capsys, "verify", str(stranger))
    assert code == 1 and "matches no zoo entry" in out


def test_verify_needs_a_target(capsys):
    code, _, err = run(capsys, "verify")
    assert code == 2 and "--all" in err


# ---- import-weights ----


def test_import_weights_accepts_a_matching_file(capsys, fake: ZooEntry, tmp_path: Path, cache: Path):
    hand_copied = tmp_path / "downloads" / "whatever-the-browser-called-it.pth"
    hand_copied.parent.mkdir()
    hand_copied.write_bytes(PAYLOAD)
    code, out, _ = run(capsys, "import-weights", str(hand_copied), "--cache-dir", str(cache))
    assert code == 0 and FAKE in out
    assert (cache / FILE).read_bytes() == PAYLOAD
    assert hand_copied.read_bytes() == PAYLOAD  # copied, not moved
    assert {p.name for p in cache.iterdir()} == {FILE, FILE + ".sha256"}, "a temporary file was left behind"
    assert json.loads((cache / f"{FILE}.sha256").read_text())["sha256"] == DIGEST  # trusted from first use
    assert run(capsys, "verify", FAKE, "--cache-dir", str(cache))[0] == 0


def test_import_weights_refuses_a_file_that_matches_nothing(capsys, fake: ZooEntry, tmp_path: Path, cache: Path):
    impostor = tmp_path / FILE  # the right name does not help: the bytes decide
    impostor.write_bytes(PAYLOAD[1:])
    code, _, err = run(capsys, "import-weights", str(impostor), "--cache-dir", str(cache))
    assert code == 1
    assert "refused" in err and "matches no zoo checkpoint" in err
    assert not cache.exists() or not any(cache.iterdir())


def test_import_weights_of_a_missing_file(capsys, tmp_path: Path, cache: Path):
    code, _, err = run(capsys, "import-weights", str(tmp_path / "nope.pth"), "--cache-dir", str(cache))
    assert code == 2 and "not a file" in err


def test_import_then_download_needs_no_network(capsys, fake: ZooEntry, server: Server, tmp_path, cache):
    source = tmp_path / "copy.pth"
    shutil.copyfile(_write(tmp_path / "payload.bin", PAYLOAD), source)
    assert run(capsys, "import-weights", str(source), "--cache-dir", str(cache))[0] == 0
    code, out, _ = run(capsys, "download", FAKE, "--cache-dir", str(cache), "--no-progress")
    assert code == 0 and Path(out.strip()) == cache / FILE
    assert server.requests == []


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
