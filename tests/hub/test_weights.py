"""``get_model(..., weights=...)`` end to end: serve, download, verify, convert, cache, load.

A fake ImageNet backbone entry (ResNet-18 GN+WS) is registered whose checkpoint is synthetic but
laid out as MMDetection names it (``gnK`` norms, ``downsample.0/1``, an ``fc`` classifier, a
``state_dict`` wrapper with ``module.`` prefixes), served on 127.0.0.1 under OpenMMLab's
``<name>-<sha256[:8]>.pth`` rule.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from http_server import Server, serve  # noqa: E402

import wszoo  # noqa: E402
from wszoo.arch import ResNetArch  # noqa: E402
from wszoo.checkpoint_io import NonFiniteWeightsError, read_safetensors, save_safetensors, sha256_of_file  # noqa: E402
from wszoo.hub import weights  # noqa: E402
from wszoo.hub.download import DownloadError, record_digest  # noqa: E402
from wszoo.zoo import ZooEntry  # noqa: E402

NAME = "fake_resnet18_gn_ws"
SERVED_DIR = "/pretrain/third_party"
NUM_CLASSES = 10


def mmdet_resnet18(*, seed: int, with_fc: bool) -> dict[str, torch.Tensor]:
    """A random ResNet-18 state dict with MMDetection's key names (BasicBlock: conv1/2, gn1/2)."""
    gen = torch.Generator().manual_seed(seed)

    def t(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    sd = {"conv1.weight": t(64, 3, 7, 7), "gn1.weight": t(64), "gn1.bias": t(64)}
    inplanes = 64
    for stage, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{stage}.{block}."
            sd[p + "conv1.weight"] = t(planes, inplanes, 3, 3)
            sd[p + "gn1.weight"], sd[p + "gn1.bias"] = t(planes), t(planes)
            sd[p + "conv2.weight"] = t(planes, planes, 3, 3)
            sd[p + "gn2.weight"], sd[p + "gn2.bias"] = t(planes), t(planes)
            if block == 0 and inplanes != planes:
                sd[p + "downsample.0.weight"] = t(planes, inplanes, 1, 1)
                sd[p + "downsample.1.weight"], sd[p + "downsample.1.bias"] = t(planes), t(planes)
            inplanes = planes
    if with_fc:
        sd["fc.weight"], sd["fc.bias"] = t(NUM_CLASSES, 512), t(NUM_CLASSES)
    return sd


def native_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMDetection's ``gnK`` norms are wszoo's ``normK``; every other name is kept."""
    return {re.sub(r"(^|\.)gn(\d)\.", r"\1norm\2.", k): v for k, v in sd.items()}


def save_named_by_hash(obj, directory: Path, stem: str) -> tuple[Path, str]:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"{stem}.tmp"
    torch.save(obj, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = directory / f"{stem}-{digest[:8]}.pth"
    tmp.rename(path)
    return path, digest


@pytest.fixture(scope="module")
def source() -> dict[str, torch.Tensor]:
    return mmdet_resnet18(seed=0, with_fc=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, source) -> tuple[Path, Path, str]:
    """(served root, path of the checkpoint under it, its sha256)."""
    root = tmp_path_factory.mktemp("served")
    wrapped = {"meta": {"epoch": 100, "note": "synthetic"}, "state_dict": {f"module.{k}": v for k, v in source.items()}}
    path, digest = save_named_by_hash(wrapped, root / SERVED_DIR.lstrip("/"), NAME)
    return root, path, digest


@pytest.fixture
def served(checkpoint) -> Iterator[tuple[Server, Path, str]]:
    """(a fresh server of the checkpoint, its path, its sha256)."""
    root, path, digest = checkpoint
    with serve(root) as server:
        yield server, path, digest


def make_entry(server: Server, file_name: str, name: str = NAME) -> ZooEntry:
    return ZooEntry(
        name=name,
        task="backbone",
        arch=ResNetArch(depth=18),
        backbone="R-18",
        openmmlab_key=f"open-mmlab://jhu/{name}",
        model_url=server.url_for(f"{SERVED_DIR}/{file_name}"),
    )


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("WSZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WSZOO_MIRROR", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def fake(register_entry, served, cache) -> ZooEntry:
    server, path, _ = served
    return register_entry(make_entry(server, path.name))


def requests_of(server: Server, entry: ZooEntry) -> int:
    return len(server.requests_for(f"{SERVED_DIR}/{entry.file_name}"))


def assert_loaded(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert sorted(state) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_default_weights_download_convert_cache_and_load(fake: ZooEntry, served, source, cache: Path):
    server, path, digest = served
    before = requests_of(server, fake)
    model = wszoo.get_model(NAME, weights="DEFAULT", progress=False)
    assert requests_of(server, fake) == before + 1
    assert_loaded(model, native_names(source))
    assert model.fc.out_features == NUM_CLASSES

    assert (cache / path.name).read_bytes() == path.read_bytes()  # the verified source, cached
    converted = weights.converted_cache_path(fake)
    assert converted.parent.parent == cache and converted.is_file()
    state, meta = read_safetensors(converted)
    assert meta["wszoo_model"] == NAME and meta["source_sha256"] == digest and meta["source_file"] == path.name
    assert sorted(state) == sorted(native_names(source))


def test_second_load_reads_only_the_converted_cache_which_is_also_a_weights_file(
    fake: ZooEntry, served, source, cache: Path
):
    server, path, _ = served
    wszoo.get_model(NAME, weights="DEFAULT", progress=False)
    before = requests_of(server, fake)
    (cache / path.name).unlink()  # neither the source checkpoint...
    server.fail(f"{SERVED_DIR}/{path.name}", status=404)  # ...nor the network is needed any more
    model = wszoo.get_model(NAME, pretrained=True, progress=False)
    assert requests_of(server, fake) == before
    assert_loaded(model, native_names(source))
    assert not (cache / path.name).exists()
    # The cached safetensors is also a valid weights= file.
    converted = weights.converted_cache_path(fake)
    for given in (str(converted), converted):
        assert_loaded(wszoo.get_model(NAME, weights=given), native_names(source))


def test_a_weights_member_loads_the_published_weights_and_the_model_keeps_it(fake: ZooEntry, served, source):
    server, _, digest = served
    member = wszoo.get_model_weights(NAME).DEFAULT
    assert member.name == "IMAGENET_V1" and member.url == fake.model_url
    model = wszoo.get_model(NAME, weights=member, pretrained=True, progress=False)  # the same thing twice: fine
    assert_loaded(model, native_names(source))
    assert model.weights is member
    assert model.meta["sha256"] == digest[:8] and model.meta["num_params"] == sum(p.numel() for p in model.parameters())
    assert model.pretrained_cfg["tag"] == "imagenet_v1" and model.pretrained_cfg["url"] == fake.model_url
    assert model.pretrained_cfg["num_classes"] == NUM_CLASSES
    assert wszoo.get_model(NAME, weights="IMAGENET_V1").weights is member


def test_wrong_hash_fails_and_caches_nothing(register_entry, served, cache: Path):
    server, path, digest = served
    wrong = f"{'0' if digest[0] != '0' else '1'}{digest[1:8]}"
    bad_name = f"{NAME}_bad-{wrong}.pth"
    server.add(f"{SERVED_DIR}/{bad_name}", path.read_bytes())  # right bytes, wrong hash in the name
    entry = make_entry(server, bad_name, name=f"{NAME}_bad")
    register_entry(entry)
    with pytest.raises(DownloadError, match=wrong):
        wszoo.get_model(entry.name, weights="DEFAULT", progress=False)
    assert requests_of(server, entry) >= 1
    assert not weights.converted_cache_path(entry).exists()
    leftovers = [p.name for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert leftovers == []


def test_no_weights_touches_nothing(fake: ZooEntry, served, cache: Path):
    server, _, _ = served
    before = len(server.requests)
    model = wszoo.get_model(NAME)
    assert len(server.requests) == before and not cache.exists()
    assert not hasattr(model, "fc") or model.fc is None


def test_local_mmdet_checkpoint(fake: ZooEntry, served, source, cache: Path):
    server, path, _ = served
    before = len(server.requests)
    model = wszoo.get_model(NAME, weights=str(path))
    assert_loaded(model, native_names(source))
    assert len(server.requests) == before and not cache.exists()


def test_local_bare_state_dict_without_classifier(fake: ZooEntry, tmp_path: Path):
    bare = mmdet_resnet18(seed=1, with_fc=False)
    path = tmp_path / "bare.pth"
    torch.save(bare, path)
    model = wszoo.get_model(NAME, weights=path)
    assert_loaded(model, native_names(bare))
    assert not any(k.startswith("fc.") for k in model.state_dict())


def test_nonexistent_path_is_a_clear_value_error(fake: ZooEntry, tmp_path: Path):
    missing = tmp_path / "nope" / "weights.pth"
    with pytest.raises(ValueError) as info:
        wszoo.get_model(NAME, weights=str(missing))
    message = str(info.value)
    assert str(missing) in message and "'DEFAULT'" in message and ".safetensors" in message


def test_checkpoint_of_another_architecture_is_refused(fake: ZooEntry, tmp_path: Path, source):
    broken = dict(source)
    broken["layer4.1.conv2.weight"] = torch.zeros(512, 512, 1, 1)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(ValueError, match=r"layer4\.1\.conv2\.weight"):
        wszoo.get_model(NAME, weights=path)


# ---- the converted cache: recorded digest and source digest, re-checked ----


def test_a_tampered_converted_cache_is_converted_again(fake: ZooEntry, served, source, cache: Path):
    server, path, digest = served
    wszoo.get_model(NAME, weights="DEFAULT", progress=False)
    converted = weights.converted_cache_path(fake)
    good_bytes = converted.read_bytes()
    record = json.loads(converted.with_name(converted.name + ".sha256").read_text())
    assert record["sha256"] == hashlib.sha256(good_bytes).hexdigest()
    state, meta = read_safetensors(converted)
    state["conv1.weight"] = state["conv1.weight"] + 1  # a valid file, same size and metadata, other weights
    save_safetensors(state, converted, metadata=meta)
    model = wszoo.get_model(NAME, weights="DEFAULT", progress=False)
    assert_loaded(model, native_names(source))  # the tampered weights were never used
    assert converted.read_bytes() == good_bytes  # converted again, identically, from the verified source
    assert not list(cache.rglob("*.lock"))


def test_a_converted_cache_of_another_source_is_converted_again(fake: ZooEntry, served, source, cache: Path):
    server, path, digest = served
    wszoo.get_model(NAME, weights="DEFAULT", progress=False)
    converted = weights.converted_cache_path(fake)
    state, meta = read_safetensors(converted)
    other = digest[:8] + ("0" if digest[8] != "0" else "1") + digest[9:]  # same prefix, another file
    forged = {k: v + 1 if k == "conv1.weight" else v for k, v in state.items()}
    save_safetensors(forged, converted, metadata={**meta, "source_sha256": other})
    record_digest(converted, sha256_of_file(converted))  # even with a consistent record of its own
    model = wszoo.get_model(NAME, weights="DEFAULT", progress=False)
    assert_loaded(model, native_names(source))
    assert read_safetensors(converted)[1]["source_sha256"] == digest


def test_offline_default_weights_fail_at_once_unless_cached(fake: ZooEntry, served, source, cache, monkeypatch):
    server, _, _ = served
    monkeypatch.setenv("WSZOO_OFFLINE", "1")
    before = len(server.requests)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="downloads are off") as info:
        wszoo.get_model(NAME, weights="DEFAULT", progress=False)
    assert time.monotonic() - start < 0.5 and len(server.requests) == before
    assert "wszoo import-weights FILE" in str(info.value)
    assert not cache.exists() or not list(cache.rglob("*.lock"))
    monkeypatch.delenv("WSZOO_OFFLINE")
    wszoo.get_model(NAME, weights="DEFAULT", progress=False)
    monkeypatch.setenv("WSZOO_OFFLINE", "1")
    assert_loaded(wszoo.get_model(NAME, weights="DEFAULT", progress=False), native_names(source))


def test_non_finite_weights_in_the_converted_cache_are_refused(fake: ZooEntry, served, cache: Path):
    wszoo.get_model(NAME, weights="DEFAULT", progress=False)
    converted = weights.converted_cache_path(fake)
    assert json.loads(converted.with_name(converted.name + ".sha256").read_text())["finite"] is True
    state, meta = read_safetensors(converted)
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    save_safetensors(state, converted, metadata=meta)
    record_digest(converted, sha256_of_file(converted))  # a consistent record, without the checked mark
    with pytest.raises(NonFiniteWeightsError, match=r"'layer2\.0\.conv1\.weight' has 1 of"):
        wszoo.get_model(NAME, weights="DEFAULT", progress=False)
