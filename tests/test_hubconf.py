"""torch.hub on this repository: cheap listing, docstrings with the AP, building without network.

``torch.hub.load`` is called with ``source="local"``. ``torch.hub.list`` and ``torch.hub.help``
take only GitHub names in recent torch, so they are given this checkout as the cached copy of a
GitHub repository (``$TORCH_HOME/hub/<owner>_<name>_<ref>``), which torch.hub uses without
asking the network when the ref is explicit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import wszoo
from wszoo.registry import get_entry, list_models
from wszoo.zoo import ENTRIES

REPO = Path(__file__).resolve().parent.parent
HUB_REPO = "wszoo-test/wszoo:main"
TINY = "faster_rcnn_r18_fpn_gn_ws"
# torch.hub finds an entry point by `name in dir(hubconf)`, so the MMDetection aliases are listed too.
ALIASES = sorted(a for e in ENTRIES for a in (e.mmdet_v2_config, e.mmdet_v3_config) if a)


@pytest.fixture
def isolated(isolated_cache: Path, tmp_path: Path) -> Path:
    """conftest's fresh WSZOO_CACHE and TORCH_HOME; returns TORCH_HOME."""
    return tmp_path / "torch"


@pytest.fixture
def hub_checkout(isolated: Path) -> str:
    """This repository as torch.hub's cached copy of ``HUB_REPO``."""
    hub_dir = Path(torch.hub.get_dir())
    if hub_dir != isolated / "hub":
        pytest.skip(f"torch.hub.set_dir() was called elsewhere ({hub_dir}); TORCH_HOME is not honoured")
    hub_dir.mkdir(parents=True)
    (hub_dir / "wszoo-test_wszoo_main").symlink_to(REPO, target_is_directory=True)
    return HUB_REPO


def test_importing_hubconf_needs_no_optional_dependency():
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import hubconf\n"
        "names = sorted(n for n in dir(hubconf) if not n.startswith('_') and callable(getattr(hubconf, n)))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pycocotools', 'huggingface_hub', 'cv2', 'onnx', 'onnxruntime'))\n"
        "print(json.dumps({'names': names, 'heavy': heavy}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(REPO), env=env
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"importing hubconf imported {report['heavy']}"
    assert report["names"] == sorted(list_models() + ALIASES)


def test_hub_list_is_the_registry_and_the_mmdet_aliases(hub_checkout: str, no_network: None):
    listed = sorted(torch.hub.list(hub_checkout, trust_repo=True, verbose=False))
    assert listed == sorted(list_models() + ALIASES)
    assert len(ALIASES) == 24 and "mask_rcnn_r50_fpn_gn_ws-all_2x_coco" in listed


@pytest.mark.parametrize("alias", ["mask_rcnn_r50_fpn_gn_ws-all_2x_coco", "mask-rcnn_r50_fpn_gn-ws-all_2x_coco"])
def test_hub_help_of_an_alias_is_the_builders_docstring(hub_checkout: str, no_network: None, alias: str):
    doc = torch.hub.help(hub_checkout, alias, trust_repo=True)
    assert doc == wszoo.mask_rcnn_r50_fpn_gn_ws_all_2x_coco.__doc__
    assert "box AP 40.6, mask AP 36.6" in doc and "score_thresh:" in doc
    assert "MaskRcnnR50FpnGnWsAll2xCoco_Weights.COCO_V1" in doc


@pytest.mark.parametrize(
    "name", ["mask_rcnn_r50_fpn_gn_ws_all_2x_coco", "faster_rcnn_x101_32x4d_fpn_gn_ws_all_1x_coco"]
)
def test_hub_help_quotes_the_ap(hub_checkout: str, no_network: None, name: str):
    doc = torch.hub.help(hub_checkout, name, trust_repo=True)
    entry = get_entry(name)
    assert f"box AP {entry.box_ap}" in doc
    assert (f"mask AP {entry.mask_ap}" in doc) == (entry.mask_ap is not None)


def test_hub_help_unknown_entry_point(hub_checkout: str, no_network: None):
    with pytest.raises(RuntimeError, match="Cannot find callable"):
        torch.hub.help(hub_checkout, "not_a_model", trust_repo=True)


def test_hub_load_builds_without_network(isolated: Path, no_network: None):
    model = torch.hub.load(str(REPO), TINY, source="local", image_scale=(320, 192))
    assert isinstance(model, torch.nn.Module)
    assert model.transform.scale == (320, 192)
    assert model.roi_heads.box_predictor.cls_score.out_features == 81
    assert not model.roi_heads.has_mask()
    cache = Path(os.environ["WSZOO_CACHE"])
    assert not cache.exists() or not any(cache.iterdir()), "building without weights wrote to the cache"


@pytest.mark.parametrize("alias", ["faster_rcnn_r50_fpn_gn_ws-all_1x_coco", "faster-rcnn_r50_fpn_gn-ws-all_1x_coco"])
def test_hub_load_an_mmdet_alias_builds_its_entry(isolated: Path, no_network: None, alias: str):
    with torch.device("meta"):  # an R-50 without memory or initialisation cost
        model = torch.hub.load(str(REPO), alias, source="local", trust_repo=True, score_thresh=0.3)
    assert isinstance(model, wszoo.modeling.detector.WSRCNN)
    assert model.roi_heads.score_thresh == 0.3
    assert model.weights is None and model.meta["weights"] is None
    assert sum(p.numel() for p in model.parameters()) == get_entry(alias).num_params == model.meta["num_params"]
    assert model.pretrained_cfg["architecture"] == "faster_rcnn_r50_fpn_gn_ws_all_1x_coco"


def test_hub_load_default_weights_of_an_entry_without_weights(isolated: Path, no_network: None):
    with pytest.raises(ValueError, match=f"{TINY} has no published weights.*weights=None"):
        torch.hub.load(str(REPO), TINY, source="local", weights="DEFAULT")
    with pytest.raises(ValueError, match="no published weights"):
        torch.hub.load(str(REPO), TINY, source="local", pretrained=True)


def test_hub_load_pretrained_and_weights_contradict(isolated: Path, no_network: None):
    with pytest.raises(ValueError, match="either pretrained=True or weights=.*'X'"):
        torch.hub.load(str(REPO), "mask_rcnn_r50_fpn_gn_ws_all_2x_coco", source="local", pretrained=True, weights="X")
    with pytest.raises(ValueError, match="either pretrained=True or weights=.*weights=None was given"):
        torch.hub.load(str(REPO), "mask-rcnn_r50_fpn_gn-ws-all_2x_coco", source="local", pretrained=True, weights=None)


def test_hub_load_unknown_entry_point(isolated: Path):
    with pytest.raises(RuntimeError, match="Cannot find callable"):
        torch.hub.load(str(REPO), "mask_rcnn_r50", source="local")
