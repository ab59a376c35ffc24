"""Weights objects: one enum per zoo entry derived from the table, torchvision's meta schema,
parameter counts equal to the built models, lookups by name, and the input presets."""

from __future__ import annotations

import copy
import inspect
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import wszoo
from wszoo import builders
from wszoo.hub.pretrained import Weights, WeightsEnum, entry_of, get_model_weights, get_weight
from wszoo.hub.weights import resolve_weights
from wszoo.meta import entry_meta
from wszoo.modeling.presets import BackbonePreset, DetectionPreset
from wszoo.registry import UnknownModelError, get_entry
from wszoo.zoo import ENTRIES, ZooEntry

PUBLISHED = [e for e in ENTRIES if e.has_weights]

# torchvision's schema (test_extended_models.py): fields every weights' meta has, and those of
# detection; wszoo's own fields are the rest of PERMITTED.
REQUIRED = {"_metrics", "min_size", "num_params", "recipe", "_docs", "_file_size", "_ops", "task", "sha256", "license"}
REQUIRED_DETECTION = {
    "categories",
    ("_metrics", "COCO-val2017", "box_map"),
    "log",
    "mmdet_v2_config",
    "mmdet_v3_config",
}
PERMITTED = (
    REQUIRED
    | {"categories", "log", "mmdet_v2_config", "mmdet_v3_config", "openmmlab_key"}
    | {
        "train_mem_gb",
        "inf_fps",
    }
)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_each_entry_has_an_enum_with_its_member_and_default(entry: ZooEntry):
    enum = get_model_weights(entry.name)
    assert issubclass(enum, WeightsEnum) and enum is get_model_weights(getattr(wszoo, entry.name))
    if not entry.has_weights:
        assert len(enum) == 0
        return
    (member,) = list(enum)  # DEFAULT is an alias, not a second member
    assert member.name == ("IMAGENET_V1" if entry.task == "backbone" else "COCO_V1")
    assert enum.DEFAULT is member and entry_of(member) is entry
    assert isinstance(member.value, Weights) and member.url == entry.model_url
    assert member.meta == entry_meta(entry)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_num_params_equals_the_built_model_for_every_entry(entry: ZooEntry):
    with torch.device("meta"):
        model = getattr(wszoo, entry.name)()
    counted = sum(p.numel() for p in model.parameters())
    assert counted == entry.num_params == entry_meta(entry)["num_params"] == model.meta["num_params"]


@pytest.mark.parametrize("entry", PUBLISHED, ids=lambda e: e.name)
def test_meta_schema(entry: ZooEntry):
    meta = get_model_weights(entry.name).DEFAULT.meta
    fields = set(meta) | {("_metrics", d, k) for d, metrics in meta["_metrics"].items() for k in metrics}
    expected = REQUIRED | (REQUIRED_DETECTION if entry.task != "backbone" else {"openmmlab_key"})
    assert not expected - fields, f"missing {expected - fields}"
    assert not set(meta) - PERMITTED, f"unsupported {set(meta) - PERMITTED}"
    assert json.loads(json.dumps(meta))["num_params"] == entry.num_params  # plain data
    assert meta["_file_size"] == round(entry.num_params * 4 / 2**20, 3)
    assert meta["_ops"] == entry.gflops > 0
    assert meta["sha256"] == entry.sha256_prefix and entry.file_name.endswith(f"-{meta['sha256']}.pth")
    assert meta["recipe"].startswith("https://")
    if entry.task == "backbone":
        assert meta["_metrics"] == {} and "categories" not in meta
    else:
        metrics = meta["_metrics"]["COCO-val2017"]
        assert metrics["box_map"] == entry.box_ap and metrics.get("mask_map") == entry.mask_ap
        assert meta["categories"][0] == "__background__" and meta["categories"][1:] == list(entry.classes)
        assert meta["mmdet_v2_config"] in meta["recipe"]


def test_weights_survive_pickle_and_copy_as_the_same_member():
    member = get_model_weights("mask_rcnn_r50_fpn_gn_ws_all_2x_coco").DEFAULT
    assert pickle.loads(pickle.dumps(member)) is member
    assert copy.deepcopy(member) is member and copy.copy(member) is member
    assert repr(member) == "MaskRcnnR50FpnGnWsAll2xCoco_Weights.COCO_V1"


def test_get_model_weights_by_alias_and_get_weight_by_full_name():
    enum = get_model_weights("mask-rcnn_r50_fpn_gn-ws-all_2x_coco")
    assert enum is get_model_weights("mask_rcnn_r50_fpn_gn_ws-all_2x_coco")
    assert get_weight("MaskRcnnR50FpnGnWsAll2xCoco_Weights.DEFAULT") is enum.COCO_V1
    assert get_weight("mask_rcnn_r50_fpn_gn_ws_all_2x_coco.COCO_V1") is enum.COCO_V1
    assert get_weight("open-mmlab://jhu/resnet50_gn_ws.IMAGENET_V1") is get_model_weights("resnet50_gn_ws").DEFAULT
    with pytest.raises(ValueError, match="has no member 'IMAGENET_V1'; its members are COCO_V1, DEFAULT"):
        get_weight("mask_rcnn_r50_fpn_gn_ws_all_2x_coco.IMAGENET_V1")
    with pytest.raises(ValueError, match="no published weights"):
        get_weight("faster_rcnn_r18_fpn_gn_ws.COCO_V1")
    with pytest.raises(ValueError, match="expected '<model or enum name>.<MEMBER>'"):
        get_weight("COCO_V1")
    with pytest.raises(UnknownModelError, match="wszoo list"):
        get_model_weights("mask_rcnn_r99")


def test_weights_members_and_their_names_mean_the_published_weights():
    entry = get_entry("faster_rcnn_r50_fpn_gn_ws_all_1x_coco")
    enum = get_model_weights(entry.name)
    for given in (enum.COCO_V1, enum.DEFAULT, "COCO_V1", f"{enum.__name__}.COCO_V1", "DEFAULT"):
        assert resolve_weights(entry, given) is entry
        assert resolve_weights(entry, given, pretrained=True) is entry  # not a contradiction
    other = get_model_weights("mask_rcnn_r50_fpn_gn_ws_all_2x_coco").DEFAULT
    with pytest.raises(ValueError, match="do not fit faster_rcnn_r50"):
        resolve_weights(entry, other)
    with pytest.raises(ValueError, match="either pretrained=True or weights=.*MaskRcnn"):
        resolve_weights(entry, other, pretrained=True)


def test_pretrained_true_with_an_explicit_weights_none_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"either pretrained=True or weights=.*weights=None was given"):
        wszoo.get_model("faster_rcnn_r18_fpn_gn_ws", pretrained=True, weights=None)
    with pytest.raises(ValueError, match="no published weights"):  # pretrained=True alone means DEFAULT
        wszoo.faster_rcnn_r18_fpn_gn_ws(pretrained=True)


def test_a_model_built_without_published_weights_says_so():
    model = wszoo.faster_rcnn_r18_fpn_gn_ws(num_classes=5, image_scale=(160, 128))
    assert model.weights is None and model.meta["weights"] is None
    assert (
        model.meta["num_params"]
        == sum(p.numel() for p in model.parameters())
        != get_entry(model.pretrained_cfg["architecture"]).num_params
    )
    assert "categories" not in model.meta and "_ops" not in model.meta  # 5 classes: not COCO's, not the table's count
    assert model.pretrained_cfg["num_classes"] == 5 and model.pretrained_cfg["url"] is None


# ---- presets ----


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)


def test_detection_preset_gives_the_same_uint8_tensor_for_pil_numpy_and_tensor():
    preset = get_model_weights("mask_rcnn_r50_fpn_gn_ws_all_2x_coco").DEFAULT.transforms()
    assert isinstance(preset, DetectionPreset)
    array = _image()
    want = torch.from_numpy(array).permute(2, 0, 1)
    for given in (array, Image.fromarray(array), want):
        got = preset(given)
        assert got.dtype == torch.uint8 and torch.equal(got, want)
    gray = preset(array[:, :, 0])
    assert gray.shape == (3, 12, 20) and torch.equal(gray[0], gray[2])
    assert "1333x800" in preset.describe()
    with pytest.raises(TypeError, match="uint8 array"):
        preset(array.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        preset(np.zeros((4, 4, 4), np.uint8))


def test_backbone_preset_normalises_with_the_configs_mean_and_std():
    preset = get_model_weights("resnet50_gn_ws").DEFAULT.transforms()
    assert isinstance(preset, BackbonePreset)
    array = _image()
    out = preset(array)
    mean, std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    expected = (torch.from_numpy(array).permute(2, 0, 1).float() - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    assert out.dtype == torch.float32 and torch.allclose(out, expected)
    assert torch.allclose(preset(torch.from_numpy(array).permute(2, 0, 1).float() / 255), expected, atol=1e-5)


# ---- builders ----


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_builder_signature_shows_its_options(entry: ZooEntry):
    signature = inspect.signature(getattr(builders, entry.name))
    params = signature.parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    assert list(params)[:4] == ["weights", "pretrained", "progress", "num_classes"]
    assert params["pretrained"].default is False and params["progress"].default is True
    assert params["weights"].default is None and params["num_classes"].default is None
    detector_options = set(inspect.signature(wszoo.modeling.detector.build_detector).parameters) - {
        "arch",
        "num_classes",
    }
    if entry.task == "backbone":
        assert signature.return_annotation is wszoo.modeling.backbone.ResNet and len(params) == 4
    else:
        assert signature.return_annotation is wszoo.modeling.detector.WSRCNN
        assert set(params) - set(list(params)[:4]) == detector_options
        assert params["score_thresh"].default == 0.05 and params["score_thresh"].annotation is float
        doc = getattr(builders, entry.name).__doc__
        assert all(f"    {name}: " in doc for name in detector_options)


def test_builders_refuse_unknown_options_and_positional_arguments_naming_the_builder():
    with pytest.raises(
        TypeError, match=r"faster_rcnn_r18_fpn_gn_ws\(\) got unexpected keyword arguments \['score_threshold'\]"
    ):
        wszoo.faster_rcnn_r18_fpn_gn_ws(score_threshold=0.5)
    with pytest.raises(TypeError, match="resnet50_gn_ws.*'score_thresh'"):
        wszoo.get_model("resnet50_gn_ws", score_thresh=0.5)
    with pytest.raises(TypeError, match="positional"):
        wszoo.faster_rcnn_r18_fpn_gn_ws(None)


def test_list_models_pretrained_lists_only_entries_with_published_weights():
    assert wszoo.list_models(pretrained=True) == [e.name for e in ENTRIES if e.has_weights]
    assert "faster_rcnn_r18_fpn_gn_ws" not in wszoo.list_models("*r18*", pretrained=True)
    with pytest.raises(ValueError, match="contradict"):
        wszoo.list_models(pretrained=True, has_weights=False)


@pytest.mark.parametrize("text", ["final.PTH", "runs/x.SAFETENSORS", "WEIGHTS", "COCO_V2", "Nope_Weights.COCO_V1"])
def test_a_missing_file_or_unknown_member_gets_the_weights_message(text):
    entry = get_entry("mask_rcnn_r50_fpn_gn_ws_all_2x_coco")
    with pytest.raises(ValueError, match="neither 'DEFAULT', a weights enum member, nor an existing file") as err:
        resolve_weights(entry, text)
    assert "mask_rcnn_r50_fpn_gn_ws_all_2x_coco.COCO_V1" in str(err.value)  # a member that exists


def test_editing_a_models_meta_leaves_the_weights_meta_alone(monkeypatch):
    weights = get_model_weights("faster_rcnn_r50_fpn_gn_ws_all_1x_coco").DEFAULT
    before = copy.deepcopy(weights.meta)
    model = torch.nn.Linear(1, 1)
    monkeypatch.setattr(builders, "_num_classes", lambda module: 81)
    builders._describe(model, entry_of(weights), entry_of(weights), source="DEFAULT", classes=None)
    model.meta["categories"].append("unicorn")
    model.meta["_metrics"]["COCO-val2017"]["box_map"] = 0.0
    assert weights.meta == before
