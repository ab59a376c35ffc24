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

import wszoo
from wszoo import builders, hf_hub, registry, weights
from wszoo.arch import DetectorArch
from wszoo.coco import COCO_CLASSES
from wszoo.conversion.api import CONVERTER_VERSION
from wszoo.conversion.checkpoint import read_safetensors, save_safetensors
from wszoo.zoo import WS_CITATION, ZooEntry

huggingface_hub = pytest.importorskip("huggingface_hub")

NAME = "fake_mask_rcnn_r18_fpn_gn_ws_all_2x_coco"
SOURCE_SHA256 = hashlib.sha256(b"the published checkpoint of " + NAME.encode()).hexdigest()
REPO = "wszoo-test/mask-rcnn-r18"
FAST = dict(image_scale=(256, 160), rpn_post_nms_top_n_test=50, score_thresh=0.0)


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

    def __enter__(self) -> "FakeHub":
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
        commit = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
        self.repos[repo_id][commit] = files
        self.refs[repo_id][revision] = commit
        return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{commit}", "commitOid": commit,
                     "pullRequestUrl": None}, {}

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
                    files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                             for f in json.loads(raw)["files"]]
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


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A fake Hub as huggingface_hub's endpoint, with a fresh huggingface_hub cache, online."""
    from huggingface_hub import constants

    with FakeHub() as server:
        # huggingface_hub reads HF_ENDPOINT / HF_HUB_CACHE / HF_HUB_OFFLINE at import: set its constants.
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_127_0_0_1")
        monkeypatch.setenv("WSZOO_CACHE", str(tmp_path / "wszoo-cache"))
        yield server


def fake_entry(**fields) -> ZooEntry:
    """A published-looking Mask R-CNN R-18 entry; its checkpoint URL is never fetched in these tests."""
    return ZooEntry(
        name=NAME, task="instance_segmentation", arch=DetectorArch(depth=18, with_mask=True), backbone="R-18-FPN",
        lr_schedule="2x", train_mem_gb=3.1, box_ap=31.4, mask_ap=29.2, classes=COCO_CLASSES,
        mmdet_v2_config=NAME.replace("_all_", "-all_"),
        model_url=f"http://127.0.0.1:9/gn%2Bws/{NAME}/{NAME}_20240917-{SOURCE_SHA256[:8]}.pth",
        config_url=f"https://example.invalid/configs/gn%2Bws/{NAME}.py", **fields,
    )


def register(monkeypatch: pytest.MonkeyPatch, entry: ZooEntry) -> ZooEntry:
    monkeypatch.setitem(registry._BY_NAME, entry.name, entry)
    monkeypatch.setattr(builders, entry.name, lambda **kwargs: builders._build(entry.name, **kwargs), raising=False)
    return entry


@pytest.fixture(scope="module")
def source_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return wszoo.get_model("mask_rcnn_r18_fpn_gn_ws", **FAST).eval()


def publish_converted(entry: ZooEntry, state_dict: dict) -> Path:
    """Puts 'the converted published checkpoint' where ``weights="DEFAULT"`` caches it."""
    path = weights.converted_cache_path(entry)
    save_safetensors(state_dict, path, metadata={
        "format": "pt", "wszoo_model": entry.name, "wszoo_converter_version": CONVERTER_VERSION,
        "source_file": entry.file_name, "source_sha256": SOURCE_SHA256, "classes": list(entry.classes),
        "num_classes": 81,
    })
    return path


def images() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (3, 61, 83), dtype=torch.uint8, generator=gen),
            torch.rand(3, 47, 40, generator=gen)]


def assert_same_outputs(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    with torch.inference_mode():
        for got, want in zip(model.eval()(images()), reference(images())):
            assert len(want["boxes"]) > 0
            for key in want:
                assert torch.equal(got[key], want[key]), key
