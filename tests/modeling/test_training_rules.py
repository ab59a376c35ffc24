"""MMDetection 3.3's training rules, each pinned on a hand-made case (no MMDetection needed).

* RPN: only anchors inside an image's own padded extent are assigned, sampled and counted;
* MaxIoUAssigner's low-quality step: the later object wins a shared best anchor (RPN and R-CNN);
* R-CNN: ground truths are prepended, each assigned to itself with its own label;
* mask targets come from masks padded to the batch canvas.

The agreement of the whole loss with real MMDetection is checked by the opt-in
``tests/test_mmdet_parity.py::test_training_matches_mmdetection``.
"""

import functools
import math

import pytest
import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.rpn import RPNHead

from wszoo.arch import DetectorArch
from wszoo.modeling.anchors import MMDetAnchorGenerator
from wszoo.modeling.detector import build_detector
from wszoo.modeling.losses import mask_targets
from wszoo.modeling.matcher import MaxIoUMatcher
from wszoo.modeling.rpn import VALID_ANCHORS, MMDetRPN
from wszoo.modeling.transforms import DetectionTransform, PaddedImageList


@functools.lru_cache(maxsize=2)
def _detector(with_mask: bool):
    torch.manual_seed(0)
    return build_detector(arch=DetectorArch(depth=18, with_mask=with_mask)).train()


# ------------------------------------------------------------------------------------------
# RPN: anchors in another image's padding
# ------------------------------------------------------------------------------------------


def _feature_sizes(canvas, strides=(4, 8, 16, 32, 64)):
    # P2..P5 are canvas / stride; P6 is a stride-2 max-pool of P5 (ceil of an odd size).
    sizes = [(canvas[0] // s, canvas[1] // s) for s in strides[:4]]
    sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    return sizes


def test_valid_flags_count_mmdetections_anchors():
    # MMDetection 3.3, image 320x256 in a 320x384 batch: 20460 of 30690 anchors are valid
    # (80*64*3 + 40*32*3 + 20*16*3 + 10*8*3 + 5*4*3); the largest image has all of them.
    gen = MMDetAnchorGenerator()
    sizes = _feature_sizes((320, 384))
    small = gen.valid_flags(sizes, (320, 256), torch.device("cpu"))
    large = gen.valid_flags(sizes, (320, 384), torch.device("cpu"))
    assert small.numel() == large.numel() == 30690
    assert int(small.sum()) == 20460 and bool(large.all())
    # Order is (level, y, x, anchor): at stride 4 the 3 anchors of (y=0, x=63) are valid, of x=64 not.
    assert small[3 * 63 : 3 * 64].all() and not small[3 * 64 : 3 * 65].any()


def test_valid_flags_p6_rounds_up_the_padded_extent():
    gen = MMDetAnchorGenerator()
    sizes = _feature_sizes((64, 96))  # P6 is 1 x 2
    flags = gen.valid_flags(sizes, (64, 32), torch.device("cpu"))
    p6 = flags[-6:]
    # ceil(32 / 64) = 1 column of P6 is valid: the one centred at x=0, not the one at x=64.
    assert p6.tolist() == [True] * 3 + [False] * 3


class _RecordingSampler(det_utils.BalancedPositiveNegativeSampler):
    def __call__(self, labels):
        self.labels = [x.clone() for x in labels]
        self.result = super().__call__(labels)
        return self.result


def _small_rpn():
    torch.manual_seed(0)
    anchors = MMDetAnchorGenerator()
    rpn = MMDetRPN(
        anchors,
        RPNHead(8, 3),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_top_n={"training": 2000, "testing": 1000},
        post_nms_top_n={"training": 1000, "testing": 1000},
        nms_thresh=0.7,
    )
    rpn.proposal_matcher = MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3)
    rpn.fg_bg_sampler = _RecordingSampler(10**9, 0.5)  # every candidate sampled
    return rpn.train()


def test_rpn_ignores_anchors_in_another_images_padding_and_does_not_count_them():
    rpn = _small_rpn()
    canvas = (64, 96)
    pad_shapes = [(64, 32), (32, 96)]  # each image is padded by the other one's extent
    sizes = _feature_sizes(canvas)
    features = {str(i): torch.randn(2, 8, h, w) for i, (h, w) in enumerate(sizes)}
    images = PaddedImageList(torch.zeros(2, 3, *canvas), [(60, 30), (30, 90)], pad_shapes)
    targets = [
        {"boxes": torch.tensor([[2.0, 4.0, 28.0, 40.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 2.0, 50.0, 28.0]]), "labels": torch.tensor([1])},
    ]
    _, losses = rpn(images, features, targets)
    sampler = rpn.fg_bg_sampler
    objectness, _ = rpn.head(list(features.values()))
    logits = torch.cat([o.permute(0, 2, 3, 1).reshape(2, -1) for o in objectness], dim=1)
    total, avg_factor = 0.0, 0
    for index, pad in enumerate(pad_shapes):
        valid = rpn.anchor_generator.valid_flags(sizes, pad, torch.device("cpu"))
        assert 0 < int(valid.sum()) < valid.numel()
        labels = sampler.labels[index]
        pos, neg = sampler.result[0][index].bool(), sampler.result[1][index].bool()
        # Anchors in the padding are ignored: label -1, never drawn as positive or negative.
        assert bool((labels[~valid] == -1).all())
        assert not bool(pos[~valid].any()) and not bool(neg[~valid].any())
        assert int(pos.sum()) > 0 and int(neg.sum()) > 0
        # Every valid, non-ignored anchor is sampled (batch_size_per_image = 1e9).
        assert torch.equal(pos | neg, valid & (labels >= 0))
        sampled = pos | neg
        total = total + torch.nn.functional.binary_cross_entropy_with_logits(
            logits[index][sampled], labels[sampled], reduction="sum"
        )
        avg_factor += max(int(pos.sum()), 1) + max(int(neg.sum()), 1)
    # Denominator: sum over images of max(#pos, 1) + max(#neg, 1) over valid anchors only.
    expected = total / (avg_factor + torch.finfo(torch.float32).eps)
    torch.testing.assert_close(losses["loss_objectness"], expected, rtol=1e-6, atol=0)


def test_rpn_loss_denominator_counts_at_least_one_positive_and_one_negative_per_image():
    rpn = _small_rpn()
    # image 0: 1 positive, 2 negatives; image 1: no positive, 1 negative -> 1+2 + 1+1 = 5.
    labels = [torch.tensor([1.0, 0.0, 0.0, -1.0]), torch.tensor([-1.0, 0.0, -1.0, -1.0])]
    targets = [torch.zeros(4, 4), torch.zeros(4, 4)]
    targets[0][0] = torch.tensor([0.5, -0.5, 0.25, 0.0])
    objectness = torch.zeros(8, 1)
    deltas = torch.zeros(8, 4)
    loss_obj, loss_box = rpn.compute_loss(objectness, deltas, labels, targets)
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(loss_obj, torch.tensor(4 * math.log(2) / (5 + eps)))
    torch.testing.assert_close(loss_box, torch.tensor(1.25 / (5 + eps)))


def test_detection_transform_reports_each_images_own_padded_extent():
    transform = DetectionTransform(scale=(96, 30), resize_backend="torch")
    images = [torch.zeros(3, 60, 30, dtype=torch.uint8), torch.zeros(3, 40, 60, dtype=torch.uint8)]
    image_list, _, _ = transform(images)
    assert image_list.image_sizes == [(60, 30), (30, 45)]
    assert image_list.pad_shapes == [(64, 32), (32, 64)]
    assert tuple(image_list.tensors.shape[-2:]) == (64, 64)


# ------------------------------------------------------------------------------------------
# Low-quality matches: the later object wins a shared best anchor
# ------------------------------------------------------------------------------------------

# gt 0 and gt 1 both have candidate 0 as their best match; candidate 0 overlaps gt 0 more.
SHARED_BEST = torch.tensor([[0.9, 0.5, 0.1], [0.8, 0.2, 0.6]])


def test_matcher_later_ground_truth_wins_a_shared_best_candidate():
    matches = MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3)(SHARED_BEST.clone())
    # candidate 0: positive for gt 0 by IoU, then re-assigned to gt 0 and then gt 1 (last wins).
    assert matches.tolist() == [1, -2, -2]


def test_matcher_low_quality_needs_min_pos_iou_and_takes_every_tie():
    iou = torch.tensor([[0.25, 0.25, 0.1], [0.4, 0.0, 0.4]])
    matches = MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3)(iou)
    # gt 0's best is 0.25 < 0.3: no forced match; gt 1's best 0.4 is shared by 0 and 2: both.
    assert matches.tolist() == [1, -1, 1]


def test_matcher_without_low_quality_keeps_each_candidates_own_best():
    matches = MaxIoUMatcher(0.5, 0.5, min_pos_iou=0.5, match_low_quality=False)(SHARED_BEST.clone())
    assert matches.tolist() == [0, 0, 1]


def test_rpn_anchor_goes_to_the_later_object_of_two_that_share_it():
    rpn = _detector(False).rpn
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
    gts = torch.tensor([[0.0, 0.0, 10.0, 9.0], [0.0, 0.0, 10.0, 8.0]])  # IoU 0.9 and 0.8 with anchor 0
    target = {"boxes": gts, "labels": torch.tensor([1, 1]), VALID_ANCHORS: torch.tensor([True, True])}
    labels, matched = rpn.assign_targets_to_anchors([anchors], [target])
    assert labels[0].tolist() == [1.0, 0.0]
    assert torch.equal(matched[0][0], gts[1])


def test_rcnn_proposal_goes_to_the_later_object_in_mask_rcnn_only():
    proposals = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])]
    gts = torch.tensor([[0.0, 0.0, 10.0, 9.0], [0.0, 0.0, 10.0, 8.0]])
    targets = [{"boxes": gts, "labels": torch.tensor([3, 7]), "masks": torch.ones(2, 120, 120)}]
    for with_mask, expected_label in ((True, 7), (False, 3)):
        heads = _detector(with_mask).roi_heads
        heads.fg_bg_sampler = det_utils.BalancedPositiveNegativeSampler(10**9, 0.25)
        boxes, matched, labels, _ = heads.select_training_samples([p.clone() for p in proposals], targets)
        # RoIs: gt 0, gt 1, proposal 0 (positive), proposal 1 (negative).
        assert torch.equal(boxes[0][2], proposals[0][0])
        assert labels[0][2].item() == expected_label, f"with_mask={with_mask}"
        assert matched[0][2].item() == (1 if with_mask else 0)


# ------------------------------------------------------------------------------------------
# R-CNN: ground truths prepended and assigned to themselves
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_mask", [False, True])
def test_identical_ground_truths_of_different_classes_keep_their_own_labels(with_mask):
    heads = _detector(with_mask).roi_heads
    heads.fg_bg_sampler = det_utils.BalancedPositiveNegativeSampler(10**9, 0.25)
    box = [20.0, 20.0, 60.0, 80.0]
    gts = torch.tensor([box, box, [100.0, 10.0, 140.0, 50.0]])
    targets = [{"boxes": gts, "labels": torch.tensor([3, 7, 5]), "masks": torch.ones(3, 160, 160)}]
    proposals = [torch.tensor([[21.0, 20.0, 60.0, 80.0], [0.0, 100.0, 30.0, 150.0]])]
    boxes, matched, labels, targets_ = heads.select_training_samples(proposals, targets)
    # The ground truths come first, in order, each assigned to itself with its own label.
    assert torch.equal(boxes[0][:3], gts)
    assert matched[0][:3].tolist() == [0, 1, 2]
    assert labels[0][:3].tolist() == [3, 7, 5]
    assert torch.equal(targets_[0][:3], torch.zeros(3, 4))
    # The proposals follow, assigned by IoU: a tie between identical boxes goes to the first,
    # unless low-quality matching (Mask R-CNN) re-assigns the best proposal to the later one.
    assert torch.equal(boxes[0][3:], proposals[0])
    assert labels[0][3:].tolist() == [7 if with_mask else 3, 0]
    assert matched[0][3].item() == (1 if with_mask else 0)


def test_ground_truths_are_sampled_even_with_no_proposals():
    heads = _detector(False).roi_heads
    heads.fg_bg_sampler = det_utils.BalancedPositiveNegativeSampler(10**9, 0.25)
    gts = torch.tensor([[20.0, 20.0, 60.0, 80.0]])
    boxes, matched, labels, _ = heads.select_training_samples(
        [torch.zeros(0, 4)], [{"boxes": gts, "labels": torch.tensor([4])}]
    )
    assert torch.equal(boxes[0], gts) and labels[0].tolist() == [4] and matched[0].tolist() == [0]


# ------------------------------------------------------------------------------------------
# Mask targets from masks padded to the batch
# ------------------------------------------------------------------------------------------


def test_mask_target_at_the_bottom_right_edge_reads_the_padded_mask():
    # A 30x30 image is padded to 32x32; an object fills its bottom-right 10x10 corner.
    image = torch.zeros(3, 30, 30, dtype=torch.uint8)
    mask = torch.zeros(1, 30, 30, dtype=torch.uint8)
    mask[0, 20:, 20:] = 1
    box = torch.tensor([[20.0, 20.0, 30.0, 30.0]])
    transform = DetectionTransform(scale=(30, 30), resize_backend="torch")
    _, targets, _ = transform([image], [{"boxes": box, "labels": torch.tensor([1]), "masks": mask}])
    padded = targets[0]["masks"]
    assert padded.shape == (1, 32, 32)  # MMDetection pads gt masks to batch_input_shape
    assert torch.equal(padded[0, :30, :30], mask[0]) and not padded[0, 30:].any() and not padded[0, :, 30:].any()
    target = mask_targets([box], [padded], [torch.tensor([0])], 28)[0]
    # The last row/column of samples lies 0.32 px past the image edge: it blends the object
    # (0.68) with the zero padding, so the corner sample is 0.68 * 0.68 = 0.46 < 0.5.
    assert not target[27, 27]
    assert target[27, 14] and target[14, 27] and target[14, 14]
    # Without the padding RoIAlign repeats the edge pixel and the corner would be foreground.
    assert mask_targets([box], [mask], [torch.tensor([0])], 28)[0, 27, 27]
