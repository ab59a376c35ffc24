"""Names, aliases, close-match errors and ``list_models`` filters of the registry."""

from __future__ import annotations

import fnmatch

import pytest

import wszoo
from wszoo.registry import TASKS, UnknownModelError, get_entry, list_models
from wszoo.zoo import ENTRIES, ZooEntry

DETECTORS = [e for e in ENTRIES if e.mmdet_v2_config]
BACKBONES = [e for e in ENTRIES if e.task == "backbone"]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_name_resolves_to_its_entry(entry: ZooEntry):
    assert get_entry(entry.name) is entry
    assert get_entry(f"  {entry.name}\n") is entry
    assert wszoo.get_model_info(entry.name) is entry


@pytest.mark.parametrize("entry", DETECTORS, ids=lambda e: e.name)
def test_mmdet_config_names_and_paths_resolve(entry: ZooEntry):
    v2, v3 = entry.mmdet_v2_config, entry.mmdet_v3_config
    # The two MMDetection naming schemes: '-' in v2 only before 'all'; v3 uses '-' between words.
    assert "_gn_ws-all_" in v2 and "_gn-ws-all_" in v3
    assert v3.replace("-", "_") == entry.name
    for alias in (
        v2,
        v3,
        f"{v2}.py",
        f"configs/gn+ws/{v2}.py",
        f"configs/gn+ws/{v3}.py",
        f"/home/me/mmdetection/configs/gn+ws/{v2}.py",
    ):
        assert get_entry(alias) is entry, alias
    assert set(entry.aliases) == {v2, v3}


@pytest.mark.parametrize("entry", BACKBONES, ids=lambda e: e.name)
def test_openmmlab_key_resolves(entry: ZooEntry):
    key = f"open-mmlab://jhu/{entry.name}"
    assert entry.openmmlab_key == key
    assert get_entry(key) is entry
    assert get_entry(f"openmmlab://jhu/{entry.name}") is entry  # mmengine accepts both prefixes


def test_aliases_are_unambiguous():
    owners: dict[str, str] = {}
    for entry in ENTRIES:
        for name in (entry.name, *entry.aliases):
            assert owners.setdefault(name, entry.name) == entry.name, f"{name} names two entries"


def test_specific_aliases():
    assert get_entry("mask_rcnn_r50_fpn_gn_ws-all_2x_coco").name == "mask_rcnn_r50_fpn_gn_ws_all_2x_coco"
    assert get_entry("mask-rcnn_r50_fpn_gn-ws-all_2x_coco").name == "mask_rcnn_r50_fpn_gn_ws_all_2x_coco"
    assert get_entry("configs/gn+ws/mask-rcnn_x101-32x4d_fpn_gn-ws-all_20-23-24e_coco.py").name == (
        "mask_rcnn_x101_32x4d_fpn_gn_ws_all_20_23_24e_coco"
    )
    assert get_entry("open-mmlab://jhu/resnet50_gn_ws").name == "resnet50_gn_ws"


def test_unknown_name_lists_close_matches_and_points_to_list():
    with pytest.raises(UnknownModelError) as info:
        get_entry("mask_rcnn_r50_fpn_gn_ws_all_2x_coc")
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert "'mask_rcnn_r50_fpn_gn_ws_all_2x_coc'" in message
    assert "mask_rcnn_r50_fpn_gn_ws_all_2x_coco" in message.split("Did you mean:")[1]
    assert "wszoo list" in message
    assert not message.startswith('"')  # not KeyError's repr-quoting


def test_close_matches_of_an_alias_typo_name_the_builder():
    with pytest.raises(KeyError) as info:
        get_entry("faster-rcnn_r101_fpn_gn-ws-all_1x_cocoo")
    assert "faster_rcnn_r101_fpn_gn_ws_all_1x_coco" in str(info.value)


def test_unrelated_name_has_no_suggestions_but_still_points_to_list():
    with pytest.raises(UnknownModelError, match="wszoo list") as info:
        get_entry("yolov8")
    assert "Did you mean" not in str(info.value)
    with pytest.raises(UnknownModelError):
        wszoo.get_model("yolov8")


def test_non_string_name_is_a_type_error():
    with pytest.raises(TypeError, match="string"):
        get_entry(None)


def test_list_models_default_is_every_entry_in_table_order():
    assert list_models() == [e.name for e in ENTRIES]


def test_list_models_include_exclude_wildcards():
    masks = list_models("mask_rcnn_*")
    assert masks == [e.name for e in ENTRIES if e.name.startswith("mask_rcnn_")]
    assert len(masks) == 9
    assert list_models(["faster_rcnn_*", "resnet*"]) == [
        e.name for e in ENTRIES if e.name.startswith(("faster_rcnn_", "resnet"))
    ]
    no_x = list_models("mask_rcnn_*", exclude="*x*32x4d*")
    assert no_x == [n for n in masks if "32x4d" not in n] and len(no_x) == 5
    assert list_models("*", exclude=["*_coco", "*_gn*"]) == []
    assert list_models("MASK_RCNN_*") == []  # names are case-sensitive


@pytest.mark.parametrize("task", TASKS)
def test_list_models_task(task: str):
    names = list_models(task=task)
    assert names and names == [e.name for e in ENTRIES if e.task == task]


def test_list_models_backbone_filter_is_case_insensitive_with_wildcards():
    assert list_models(backbone="x-101*") == [e.name for e in ENTRIES if e.backbone.startswith("X-101")]
    assert len(list_models(backbone="X-101*")) == 5  # 1 Faster + 2 Mask R-CNN, 2 ImageNet backbones
    assert list_models(backbone="R-50-FPN") == [
        "faster_rcnn_r50_fpn_gn_ws_all_1x_coco",
        "mask_rcnn_r50_fpn_gn_ws_all_2x_coco",
        "mask_rcnn_r50_fpn_gn_ws_all_20_23_24e_coco",
    ]


def test_list_models_has_weights():
    with_weights, without = list_models(has_weights=True), list_models(has_weights=False)
    assert set(with_weights).isdisjoint(without)
    assert set(with_weights) | set(without) == set(list_models())
    assert len(with_weights) == 18
    assert without == ["faster_rcnn_r18_fpn_gn_ws", "mask_rcnn_r18_fpn_gn_ws"]


def test_list_models_filters_combine():
    names = list_models(
        "mask_rcnn_*", exclude="*20_23_24e*", task="instance_segmentation", backbone="R-*", has_weights=True
    )
    assert names == ["mask_rcnn_r50_fpn_gn_ws_all_2x_coco", "mask_rcnn_r101_fpn_gn_ws_all_2x_coco"]
    assert list_models("faster_rcnn_*", task="instance_segmentation") == []
    for name in list_models(task="object_detection", has_weights=True):
        assert fnmatch.fnmatchcase(name, "faster_rcnn_*_coco")


@pytest.mark.parametrize("task", ["detections", "segment", "backbones", ""])
def test_invalid_task_is_rejected_with_the_valid_ones(task: str):
    with pytest.raises(ValueError) as info:
        list_models(task=task)
    for valid in TASKS:
        assert valid in str(info.value)


@pytest.mark.parametrize(
    "alias, task",
    [
        ("detection", "object_detection"),
        ("DET", "object_detection"),
        ("instance-segmentation", "instance_segmentation"),
        ("seg", "instance_segmentation"),
        ("Backbone", "backbone"),
    ],
)
def test_task_aliases_and_spellings(alias: str, task: str):
    assert list_models(task=alias) == list_models(task=task) != []
