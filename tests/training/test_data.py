"""COCO-format datasets as MMDetection's CocoDataset reads them, and the resumable group sampler."""

import torch
from synthetic_coco import make_dataset

from wszoo.training.data import CocoDataset, GroupedBatchSampler, ShardSampler


def test_dataset_labels_crowd_and_empty_images(tmp_path):
    images, ann = make_dataset(tmp_path, num_images=6, with_empty=True, with_crowd=True)
    train = CocoDataset(images, ann, train=True, with_masks=True)
    test = CocoDataset(images, ann)
    assert train.classes == ["square", "disk", "triangle"] and train.category_ids == [1, 3, 7]
    assert train.num_classes == 4
    assert len(test) == 6 and len(train) == 5  # the image without annotations is skipped in training only
    assert test[5][1]["boxes"].shape == (0, 4) and test[5][1]["labels"].shape == (0,)
    image, target = train[0]  # image 0 also holds a crowd annotation: dropped
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert len(target["boxes"]) == len(target["labels"]) == len(target["masks"]) == 1
    assert set(target["labels"].tolist()) <= {1, 2, 3}
    assert target["masks"].shape[1:] == image.shape[1:] and target["masks"].dtype == torch.uint8
    # boxes are x1, y1, x2, y2 = [x, y, x + w, y + h] and enclose the mask
    ys, xs = torch.where(target["masks"][0].bool())
    assert target["boxes"][0].tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_horizontal_flip_moves_boxes_with_masks(tmp_path):
    images, ann = make_dataset(tmp_path, num_images=3)
    dataset = CocoDataset(images, ann, train=True, with_masks=True)
    (image, target), (flipped, flipped_target) = dataset[(1, False)], dataset[(1, True)]
    width = image.shape[-1]
    assert torch.equal(flipped, image.flip(-1)) and torch.equal(flipped_target["masks"], target["masks"].flip(-1))
    x1, y1, x2, y2 = target["boxes"].unbind(1)
    assert torch.equal(flipped_target["boxes"], torch.stack([width - x2, y1, width - x1, y2], dim=1))


def test_group_sampler_is_deterministic_grouped_and_resumable():
    sizes = [(64, 80) if i % 3 == 0 else (64, 64) for i in range(11)]
    sampler = GroupedBatchSampler(sizes, batch_size=2, seed=3)
    sampler.set_epoch(1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6  # 4 wide -> 2 batches, 7 tall -> padded to 8 -> 4
    for batch in batches:
        assert len({sizes[i][1] for i, _ in batch}) == 1  # one aspect group per batch
    assert list(sampler) == batches
    sampler.set_epoch(1, start_batch=3)
    assert list(sampler) == batches[3:]
    sampler.set_epoch(2)
    assert list(sampler) != batches


def test_distributed_shards_are_disjoint_batches():
    sizes = [(64, 64)] * 8
    shards = []
    for rank in range(2):
        sampler = GroupedBatchSampler(sizes, batch_size=2, seed=0, rank=rank, world_size=2)
        sampler.set_epoch(0)
        shards.append([i for batch in sampler for i, _ in batch])
    assert sorted(shards[0] + shards[1]) == list(range(8))
    assert list(ShardSampler(5, rank=1, world_size=2)) == [1, 3]


def test_class_subset_relabels_and_filters_training_images(tmp_path):
    images, ann = make_dataset(tmp_path, num_images=6)
    disks = CocoDataset(images, ann, train=True, classes=["disk"])
    with_disk = {a["image_id"] for a in disks.coco.dataset["annotations"] if a["category_id"] == 3}
    assert disks.category_ids == [3] and disks.num_classes == 2
    assert set(disks.image_ids) == with_disk
    assert all(disks[i][1]["labels"].tolist() == [1] * len(disks[i][1]["labels"]) for i in range(len(disks)))
