"""Pushing to and loading from the Hugging Face Hub, against a fake Hub on 127.0.0.1.

:class:`FakeHub` answers the few endpoints huggingface_hub's ``create_repo``, ``upload_folder``
and ``hf_hub_download`` use (repo creation, YAML validation, pre-upload, NDJSON commit, resolve),
keeping every commit, so a push is followed by real downloads through huggingface_hub's cache
and then by loads with ``HF_HUB_OFFLINE`` while the server refuses everything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from http_server import serve  # noqa: E402

import wszoo  # noqa: E402
from wszoo import registry
from wszoo.arch import DetectorArch  # noqa: E402
from wszoo.checkpoint_io import read_safetensors, save_safetensors  # noqa: E402
from wszoo.coco import COCO_CLASSES  # noqa: E402
from wszoo.conversion.api import CONVERTER_VERSION  # noqa: E402
from wszoo.hub import hf_load, hf_publish, weights  # noqa: E402
from wszoo.zoo import WS_CITATION, ZooEntry  # noqa: E402

huggingface_hub = pytest.importorskip("huggingface_hub")

NAME = "fake_mask_rcnn_r18_fpn_gn_ws_all_2x_coco"
SOURCE_SHA256 = hashlib.sha256(b"the published checkpoint of " + NAME.encode()).hexdigest()
REPO = "wszoo-test/mask-rcnn-r18"
# Small and fast: tiny test scale, 10 proposals, 3 detections (random weights score ~1/81: keep them all).
FAST = dict(image_scale=(128, 96), rpn_post_nms_top_n_test=10, detections_per_img=3, score_thresh=0.0)


class FakeHub:
    """An in-memory Hub: ``repos[repo_id]`` maps commit ids to ``{path: bytes}``; ``refs`` the branches."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}
        self.refs: dict[str, dict[str, str]] = {}
        self.requests: list[tuple[str, str]] = []
        self.refuse = False  # answer 503 to everything (the Hub is down)
        self.validated_yaml: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        commit = self.refs[repo_id].get(revision, revision)
        return self.repos[repo_id][commit]

    # ---- the API ----

    def _create(self, body: dict) -> tuple[int, dict, dict]:
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        self.repos.setdefault(repo_id, {})
        self.refs.setdefault(repo_id, {})
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}, {}

    def _commit(self, repo_id: str, revision: str, raw: bytes) -> tuple[int, dict, dict]:
        lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        files = dict(self.files(repo_id, revision)) if revision in self.refs[repo_id] else {}
        for line in lines:
            if line["key"] == "file":
                files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            elif line["key"] != "header":
                return 400, {"error": f"the fake Hub does not support {line['key']}"}, {}
        commit = hashlib.sha1(
            json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in files.items()}, sort_keys=True).encode()
        ).hexdigest()
        self.repos[repo_id][commit] = files
        self.refs[repo_id][revision] = commit
        return (
            200,
            {"commitUrl": f"{self.url}/{repo_id}/commit/{commit}", "commitOid": commit, "pullRequestUrl": None},
            {},
        )

    def _resolve(self, repo_id: str, revision: str, path: str) -> tuple[int, bytes, dict]:
        if repo_id not in self.repos:
            return 404, b"", {"X-Error-Code": "RepoNotFound"}
        commit = self.refs[repo_id].get(revision, revision)
        if commit not in self.repos[repo_id]:
            return 404, b"", {"X-Error-Code": "RevisionNotFound"}
        if path not in self.repos[repo_id][commit]:
            return 404, b"", {"X-Error-Code": "EntryNotFound"}
        data = self.repos[repo_id][commit][path]
        return 200, data, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict, *, head: bool = False) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _json(self, status: int, obj: dict, headers: dict) -> None:
                self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **headers})

            def _route(self, method: str) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((method, path))
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
                if hub.refuse:
                    return self._send(503, b"down", {})
                parts = path.strip("/").split("/")
                if method == "POST" and path == "/api/repos/create":
                    return self._json(*hub._create(json.loads(raw)))
                if method == "POST" and path == "/api/validate-yaml":
                    hub.validated_yaml.append(json.loads(raw)["content"])
                    return self._json(200, {"errors": [], "warnings": []}, {})
                if method == "POST" and parts[:2] == ["api", "models"] and parts[4] == "preupload":
                    files = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                        for f in json.loads(raw)["files"]
                    ]
                    return self._json(200, {"files": files}, {})
                if method == "POST" and parts[:2] == ["api", "models"] and parts[4] == "commit":
                    return self._json(*hub._commit(f"{parts[2]}/{parts[3]}", parts[5], raw))
                if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
                    status, body, headers = hub._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
                    return self._send(status, body, headers, head=method == "HEAD")
                return self._json(404, {"error": f"the fake Hub has no {method} {path}"}, {})

            def do_GET(self) -> None:
                self._route("GET")

            def do_HEAD(self) -> None:
                self._route("HEAD")

            def do_POST(self) -> None:
                self._route("POST")

        return Handler


def point_huggingface_hub_at(mp: pytest.MonkeyPatch, url: str, cache: Path) -> None:
    """huggingface_hub reads HF_ENDPOINT / HF_HUB_CACHE / HF_HUB_OFFLINE at import: set its constants."""
    from huggingface_hub import constants

    mp.setattr(constants, "ENDPOINT", url)
    mp.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    mp.setattr(constants, "HF_HUB_CACHE", str(cache))
    mp.setattr(constants, "HF_HUB_OFFLINE", False)
    mp.setenv("HF_TOKEN", "hf_fake_token_for_127_0_0_1")


def fake_entry(**fields) -> ZooEntry:
    """A published-looking Mask R-CNN R-18 entry; its checkpoint URL is never fetched unless replaced."""
    defaults = dict(
        name=NAME,
        task="instance_segmentation",
        arch=DetectorArch(depth=18, with_mask=True),
        backbone="R-18-FPN",
        lr_schedule="2x",
        train_mem_gb=3.1,
        box_ap=31.4,
        mask_ap=29.2,
        classes=COCO_CLASSES,
        mmdet_v2_config=NAME.replace("_all_", "-all_"),
        model_url=f"http://127.0.0.1:9/gn%2Bws/{NAME}/{NAME}_20240917-{SOURCE_SHA256[:8]}.pth",
        config_url=f"https://example.invalid/configs/gn%2Bws/{NAME}.py",
    )
    return ZooEntry(**{**defaults, **fields})


def publish_converted(entry: ZooEntry, state_dict: dict, cache: Path) -> Path:
    """Puts 'the converted published checkpoint' where ``weights="DEFAULT"`` caches it."""
    path = weights.converted_cache_path(entry, cache)
    save_safetensors(
        state_dict,
        path,
        metadata={
            "format": "pt",
            "wszoo_model": entry.name,
            "wszoo_converter_version": CONVERTER_VERSION,
            "source_file": entry.file_name,
            "source_sha256": SOURCE_SHA256,
            "classes": list(entry.classes),
            "num_classes": 81,
        },
    )
    return path


def image() -> torch.Tensor:
    return torch.randint(0, 256, (3, 61, 83), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def assert_same_outputs(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    with torch.inference_mode():
        got, want = model.eval()([image()])[0], reference([image()])[0]
    assert len(want["boxes"]) > 0 and sorted(got) == sorted(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def assert_same_weights(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    """Same builder and equal state dicts: the outputs are equal too (one forward per test is enough)."""
    got, want = model.state_dict(), reference.state_dict()
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)


@pytest.fixture(scope="module")
def source_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return wszoo.get_model("mask_rcnn_r18_fpn_gn_ws", **FAST).eval()


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, source_model) -> Iterator[FakeHub]:
    """The fake entry's 'published' weights pushed once with ``wszoo push-to-hub`` to a running fake Hub."""
    from wszoo.cli import main

    tmp = tmp_path_factory.mktemp("hub")
    with FakeHub() as server, pytest.MonkeyPatch.context() as mp, registry.registered(fake_entry()) as entry:
        point_huggingface_hub_at(mp, server.url, tmp / "hf-cache")
        mp.setenv("WSZOO_CACHE", str(tmp / "wszoo-cache"))
        mp.delenv("WSZOO_MIRROR", raising=False)
        publish_converted(entry, source_model.state_dict(), tmp / "wszoo-cache")
        assert main(["push-to-hub", NAME, "--repo-id", REPO, "--quiet"]) == 0
        yield server


@pytest.fixture
def fresh_hf_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


def test_push_uploads_weights_config_and_card(pushed: FakeHub, source_model):
    files = pushed.files(REPO)
    assert sorted(files) == ["README.md", "config.json", "model.safetensors"]
    assert files["model.safetensors"] == weights.converted_cache_path(registry.get_entry(NAME)).read_bytes()

    config = json.loads(files["config.json"])
    assert config["builder"] == NAME and config["arch"] == {
        "type": "DetectorArch",
        "depth": 18,
        "groups": 1,
        "base_width": 64,
        "with_mask": True,
        "weight_standardization": True,
    }
    assert config["classes"] == list(COCO_CLASSES) and config["num_classes"] == 81
    assert config["preprocessing"]["mean"] == [123.675, 116.28, 103.53] and config["source_sha256"] == SOURCE_SHA256

    card = huggingface_hub.ModelCard(files["README.md"].decode())
    assert pushed.validated_yaml == [files["README.md"].decode()]  # checked by the "Hub" before the commit
    assert card.data.library_name == "wszoo" and card.data.license == "apache-2.0"
    results = {(r.task_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results == {("object-detection", "box AP"): 31.4, ("instance-segmentation", "mask AP"): 29.2}
    entry = registry.get_entry(NAME)
    for text in (WS_CITATION.strip(), entry.model_url, entry.config_url, SOURCE_SHA256, f"hf-hub:{REPO}"):
        assert text in card.text


def test_load_from_the_hub_then_offline_from_its_cache(
    pushed: FakeHub, source_model, fresh_hf_cache: Path, monkeypatch: pytest.MonkeyPatch
):
    from huggingface_hub import constants

    model = wszoo.get_model(NAME, weights=f"hf-hub:{REPO}", **FAST)
    assert_same_outputs(model, source_model)
    assert ("GET", f"/{REPO}/resolve/main/model.safetensors") in pushed.requests
    assert any(fresh_hf_cache.rglob("model.safetensors"))  # huggingface_hub's cache layout

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(pushed, "refuse", True)
    before = len(pushed.requests)
    commit = pushed.refs[REPO]["main"]
    for spec in (f"hf-hub:{REPO}", f"hf-hub:{REPO}@{commit}"):
        assert_same_weights(wszoo.get_model(NAME, weights=spec, **FAST), source_model)
    assert len(pushed.requests) == before  # offline: not one request


def test_registry_hub_repo_is_a_verified_source_after_the_original(
    pushed: FakeHub, source_model, tmp_path: Path, fresh_hf_cache: Path, monkeypatch: pytest.MonkeyPatch, register_entry
):
    monkeypatch.setenv("WSZOO_CACHE", str(tmp_path / "empty-wszoo-cache"))
    with serve({}) as original:  # the original URL answers 404
        entry = register_entry(
            fake_entry(hf_repo=REPO, model_url=original.url_for(f"/{NAME}/{NAME}_20240917-{SOURCE_SHA256[:8]}.pth"))
        )
        model = wszoo.get_model(NAME, weights="DEFAULT", **FAST)
        assert len(original.requests) >= 1
    assert_same_weights(model, source_model)

    # The same file refused for an entry whose published hash it does not carry.
    wrong_hash_url = entry.model_url.replace(SOURCE_SHA256[:8], "0badc0de")
    other = fake_entry(hf_repo=REPO, model_url=wrong_hash_url)
    with pytest.raises(hf_load.HubWeightsError, match="source_sha256"):
        hf_load.published_from_hub(other)


def test_verify_published_names_the_field_that_disagrees():
    entry = fake_entry()
    good = {"wszoo_model": NAME, "source_sha256": SOURCE_SHA256, "wszoo_converter_version": CONVERTER_VERSION}
    hf_load.verify_published(entry, good, what="x")
    for field, bad in (
        ("wszoo_model", "mask_rcnn_r18_fpn_gn_ws"),
        ("source_sha256", "0" * 64),
        ("wszoo_converter_version", "0"),
    ):
        with pytest.raises(hf_load.HubWeightsError, match=f"{field}='{bad}'"):
            hf_load.verify_published(entry, {**good, field: bad}, what="x")


def test_hub_errors_are_clear(pushed: FakeHub, fresh_hf_cache: Path, monkeypatch: pytest.MonkeyPatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # first, while nothing is cached
    with pytest.raises(hf_load.HubWeightsError, match="HF_HUB_OFFLINE is set"):
        wszoo.get_model(NAME, weights=f"hf-hub:{REPO}", **FAST)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(hf_load.HubWeightsError, match="no Hub repository 'wszoo-test/missing'"):
        wszoo.get_model(NAME, weights="hf-hub:wszoo-test/missing", **FAST)
    with pytest.raises(hf_load.HubWeightsError, match="no revision 'v9'"):
        wszoo.get_model(NAME, weights=f"hf-hub:{REPO}@v9", **FAST)
    with pytest.raises(hf_load.HubWeightsError, match="do not fit faster_rcnn_r18_fpn_gn_ws"):
        wszoo.get_model("faster_rcnn_r18_fpn_gn_ws", weights=f"hf-hub:{REPO}", **FAST)
    for bad in ("hf-hub:", "hf-hub:no-namespace", "hf-hub:a/b/c", "hf-hub:a/b@"):
        with pytest.raises(hf_load.HubWeightsError, match="expected 'hf-hub:ORG/REPO'"):
            hf_load.HubWeights.parse(bad)


def test_card_of_other_weights_claims_no_published_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source_model, register_entry
):
    """Weights that are not the published checkpoint (fine-tuned, here random) are staged without the AP."""
    entry = register_entry(fake_entry())
    local = tmp_path / "finetuned.safetensors"
    save_safetensors(source_model.state_dict(), local, metadata={"note": "fine-tuned"})
    folder = hf_publish.stage(entry, tmp_path / "staged", repo_id=REPO, weights=local)
    card = huggingface_hub.ModelCard((folder / "README.md").read_text())
    assert not card.data.eval_results and "**not** MMDetection's published checkpoint" in card.text
    state, metadata = read_safetensors(folder / "model.safetensors")
    assert metadata["wszoo_model"] == NAME and metadata["source_file"] == "finetuned.safetensors"
    assert all(torch.equal(state[k], v) for k, v in source_model.state_dict().items())


def test_wszoo_offline_keeps_hub_weights_to_the_cache(pushed: FakeHub, fresh_hf_cache: Path, monkeypatch):
    monkeypatch.setenv("WSZOO_OFFLINE", "1")
    before = len(pushed.requests)
    with pytest.raises(hf_load.HubWeightsError, match="WSZOO_OFFLINE is set and it is not in huggingface_hub's cache"):
        wszoo.get_model(NAME, weights=f"hf-hub:{REPO}", **FAST)
    assert len(pushed.requests) == before


def test_trained_weights_pushed_and_loaded_back_keep_their_spec(tmp_path: Path, fresh_hf_cache: Path):
    """`wszoo push-to-hub --weights final.safetensors`, then hf-hub: loads build it as it was trained."""
    from wszoo.cli import main
    from wszoo.model_spec import SPEC_KEY, make_spec
    from wszoo.training.checkpoints import save_weights

    torch.manual_seed(0)
    trained = wszoo.get_model("mask_rcnn_r18_fpn_gn_ws", num_classes=3, **FAST)
    spec = make_spec("mask_rcnn_r18_fpn_gn_ws", num_classes=3, classes=["cat", "hat"], build_kwargs=FAST)
    local = save_weights(trained, tmp_path / "final.safetensors", spec=spec)
    with FakeHub() as server, pytest.MonkeyPatch.context() as mp:
        point_huggingface_hub_at(mp, server.url, fresh_hf_cache)
        assert main(["push-to-hub", "mask_rcnn_r18_fpn_gn_ws", "--repo-id", "me/trained", "--weights", str(local)]) == 0
        files = server.files("me/trained")
        config = json.loads(files["config.json"])
        assert config["classes"] == ["cat", "hat"] and config["preprocessing"]["resize"]["scale"] == [128, 96]
        assert config["test_settings"]["score_thresh"] == 0.0 and config["build_kwargs"]["detections_per_img"] == 3
        card = huggingface_hub.ModelCard(files["README.md"].decode())
        assert not card.data.datasets and "cat, hat" in card.text
        model = wszoo.get_model("mask_rcnn_r18_fpn_gn_ws", weights="hf-hub:me/trained")
    assert model.transform.scale == (128, 96) and model.roi_heads.detections_per_img == 3
    assert_same_weights(model, trained)
    (tmp_path / "pushed.safetensors").write_bytes(files["model.safetensors"])
    assert json.loads(read_safetensors(tmp_path / "pushed.safetensors")[1][SPEC_KEY])["classes"] == ["cat", "hat"]
