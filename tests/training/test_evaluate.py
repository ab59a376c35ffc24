"""COCO results and the 12 AP numbers: a perfect detector scores 1.0; ids are the dataset's own."""

import json

import pytest
import torch
from synthetic_coco import ground_truth_results, make_dataset

from wszoo.training.data import CocoDataset
from wszoo.training.evaluate import STAT_NAMES, coco_metrics, to_coco_results


def test_ground_truth_as_predictions_gives_ap_1(tmp_path):
    images, ann = make_dataset(tmp_path, num_images=6, with_crowd=True)
    metrics = coco_metrics(ann, ground_truth_results(ann), iou_types=("bbox", "segm"))
    for iou_type in ("bbox", "segm"):
        assert list(metrics[iou_type]) == list(STAT_NAMES)
        assert metrics[iou_type]["AP"] == pytest.approx(1.0)
        assert metrics[iou_type]["AP50"] == pytest.approx(1.0)


def test_model_outputs_become_results_with_dataset_category_ids(tmp_path):
    images, ann = make_dataset(tmp_path, num_images=4)
    dataset = CocoDataset(images, ann, with_masks=True)
    outputs = []
    for index in range(len(dataset)):  # the targets, as a model would output them
        _, target = dataset[index]
        outputs.append(
            {
                "boxes": target["boxes"],
                "labels": target["labels"],
                "scores": torch.ones(len(target["labels"])),
                "masks": target["masks"][:, None].float(),
            }
        )
    results = [
        r
        for index, out in enumerate(outputs)
        for r in to_coco_results(out, image_id=dataset.image_ids[index], category_ids=dataset.category_ids)
    ]
    truth = json.loads(ann.read_text())["annotations"]
    assert sorted(r["category_id"] for r in results) == sorted(a["category_id"] for a in truth)
    assert {r["category_id"] for r in results} <= {1, 3, 7}
    json.dumps(results)  # serialisable as written to the results file
    metrics = coco_metrics(dataset.coco, results, iou_types=("bbox", "segm"))
    assert metrics["bbox"]["AP"] == pytest.approx(1.0) and metrics["segm"]["AP"] == pytest.approx(1.0)


def test_no_detections_is_ap_zero(tmp_path):
    images, ann = make_dataset(tmp_path, num_images=2)
    assert coco_metrics(ann, [])["bbox"]["AP"] == 0.0
