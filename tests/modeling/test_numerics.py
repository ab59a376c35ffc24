"""Stage-by-stage facts of MMDetection's numerics (../shared/reference/mmdet-semantics.md)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.image_list import ImageList

from wszoo.modeling.anchors import MMDetAnchorGenerator
from wszoo.modeling.backbone import FPN
from wszoo.modeling.box_ops import DeltaXYWHCoder, batched_nms
from wszoo.modeling.roi_heads import MMDetRoIAlign
from wszoo.modeling.transforms import DetectionTransform, has_cv2, paste_masks, rescale_size, resize_image


def test_base_anchors_are_mmdetections_unrounded_ones():
    gen = MMDetAnchorGenerator()
    base = gen.base_anchors(4, torch.float32, torch.device("cpu"))
    expected = torch.tensor(
        [
            [-22.627417, -11.313708, 22.627417, 11.313708],
            [-16.0, -16.0, 16.0, 16.0],
            [-11.313708, -22.627417, 11.313708, 22.627417],
        ]
    )
    torch.testing.assert_close(base, expected, rtol=0, atol=1e-5)


def test_anchor_grid_order_and_fixed_strides():
    gen = MMDetAnchorGenerator()
    # A 800x1216 batch: P6 is 13x19 where image_size // grid_size would give stride 61, not 64.
    sizes = [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19)]
    maps = [torch.zeros(1, 1, *s) for s in sizes]
    anchors = gen(ImageList(torch.zeros(1, 3, 800, 1216), [(800, 1216)]), maps)[0]
    assert anchors.shape[0] == 3 * sum(h * w for h, w in sizes)
    offset = 3 * sum(h * w for h, w in sizes[:4])
    p6 = anchors[offset:].view(13, 19, 3, 4)
    # index (y * W + x) * 3 + a; shift x * stride with no half-stride offset
    # the square anchor of stride 64 is 64 * scale 8 = 512 wide
    torch.testing.assert_close(
        p6[2, 5, 1], torch.tensor([5 * 64 - 256.0, 2 * 64 - 256.0, 5 * 64 + 256.0, 2 * 64 + 256.0])
    )


def test_rescale_size_rounds_like_mmcv():
    # chelsea (451x300): MMDetection reports scale_factor (2.6674057649667406, 2.6666666666666665)
    assert rescale_size(300, 451) == (800, 1203)
    assert rescale_size(427, 640) == (800, 1199)
    assert rescale_size(1000, 4000) == (333, 1333)  # long side bound
    _, _, metas = DetectionTransform()([torch.zeros(3, 300, 451, dtype=torch.uint8)])
    assert metas[0].scale_factor == (1203 / 451, 800 / 300) == (2.6674057649667406, 2.6666666666666665)


def test_transform_normalises_then_pads_with_zero_to_32():
    image = torch.full((3, 100, 150), 128, dtype=torch.uint8)
    batch, _, metas = DetectionTransform(scale=(300, 200))([image, image[:, :50, :80]])
    assert metas[0].img_shape == (200, 300) and metas[1].img_shape == (188, 300)
    assert batch.tensors.shape == (2, 3, 224, 320)
    mean = torch.tensor([123.675, 116.28, 103.53])
    std = torch.tensor([58.395, 57.12, 57.375])
    torch.testing.assert_close(batch.tensors[0, :, 0, 0], (128 - mean) / std)
    assert float(batch.tensors[0, :, 200:].abs().max()) == 0 and float(batch.tensors[0, :, :, 300:].abs().max()) == 0


@pytest.mark.skipif(not has_cv2(), reason="OpenCV not installed")
def test_torch_resize_path_stays_within_a_grey_level_of_opencv():
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(1, 3, 12, 16, generator=g) * 255, size=(120, 160), mode="bilinear")[0]
    image = (smooth + torch.rand(3, 120, 160, generator=g) * 20).clamp(0, 255).to(torch.uint8)
    exact = resize_image(image, (200, 267), backend="cv2")
    approx = resize_image(image, (200, 267), backend="torch")
    diff = (exact - approx).abs()
    assert float(diff.max()) <= 1.0
    assert float((diff > 0).float().mean()) < 0.2  # benchmarks/resize_paths.py measures about 12%


def test_coder_decode_is_mmdetections_delta2bbox():
    coder = DeltaXYWHCoder(stds=(0.1, 0.1, 0.2, 0.2))
    rois = torch.tensor([[10.0, 20.0, 50.0, 100.0]])
    deltas = torch.tensor([[0.5, -0.25, 30.0, -30.0]])  # dw/dh beyond the clamp on both sides
    out = coder.decode_single(deltas, rois, max_shape=(1000, 1000))
    d = deltas * torch.tensor([0.1, 0.1, 0.2, 0.2])
    limit = abs(math.log(16 / 1000))
    cx, cy, w, h = (
        30.0 + 40 * d[0, 0],
        60.0 + 80 * d[0, 1],
        40 * math.exp(min(float(d[0, 2]), limit)),
        80 * math.exp(max(float(d[0, 3]), -limit)),
    )
    expected = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]]).clamp(0, 1000)
    torch.testing.assert_close(out, expected)
    gt = torch.tensor([[12.0, 25.0, 60.0, 90.0]])
    torch.testing.assert_close(coder.decode_single(coder.encode_single(gt, rois), rois), gt)


def test_batched_nms_never_mixes_groups_and_both_paths_agree():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(600, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + 20 + torch.rand(600, 2, generator=g) * 60], dim=1)
    scores = torch.rand(600, generator=g)
    idxs = torch.randint(0, 5, (600,), generator=g)
    single = batched_nms(boxes, scores, idxs, 0.5)
    split = batched_nms(boxes, scores, idxs, 0.5, split_thr=10)
    assert torch.equal(single, split)
    dup = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    assert batched_nms(dup, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5).tolist() == [0, 1]
    assert batched_nms(dup, torch.tensor([0.9, 0.8]), torch.tensor([1, 1]), 0.5).tolist() == [0]


def test_roi_levels_follow_finest_scale_56():
    pool = MMDetRoIAlign(7)
    sides = torch.tensor([50.0, 111.0, 112.0, 223.0, 224.0, 447.0, 448.0, 2000.0])
    rois = torch.stack([torch.zeros(8), torch.zeros(8), torch.zeros(8), sides, sides], dim=1)
    assert pool.map_levels(rois).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_roi_align_is_aligned_with_adaptive_sampling():
    feature = torch.arange(64.0).view(1, 1, 8, 8)
    pool = MMDetRoIAlign(2, strides=(1,))
    out = pool({"0": feature}, [torch.tensor([[0.0, 0.0, 4.0, 4.0]])])
    # aligned=True: pixel centres sit at +0.5, so a box [0, 4] averages pixels 0..3 exactly.
    expected = feature[0, 0, :4, :4].reshape(2, 2, 2, 2).permute(0, 2, 1, 3).mean(dim=(2, 3))
    torch.testing.assert_close(out[0, 0], expected)


def test_fpn_extra_level_is_a_stride_2_max_pool_of_p5():
    fpn = FPN([8, 8, 8, 8], 32).eval()
    feats = [torch.randn(1, 8, s, s) for s in (100, 50, 25, 13)]
    with torch.no_grad():
        outs = fpn(feats)
    assert [o.shape[-1] for o in outs] == [100, 50, 25, 13, 7]
    torch.testing.assert_close(outs[4], outs[3][..., ::2, ::2])


def test_paste_masks_samples_pixel_centres_inside_the_box():
    masks = torch.ones(1, 28, 28)
    boxes = torch.tensor([[10.0, 20.0, 30.5, 25.0]])
    out = paste_masks(masks, boxes, (40, 50))
    assert out.shape == (1, 1, 40, 50)
    binary = out[0, 0] >= 0.5
    ys, xs = binary.nonzero(as_tuple=True)
    assert (int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())) == (10, 30, 20, 24)
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (40, 50)).shape == (0, 1, 40, 50)


def test_rpn_low_quality_matches_need_min_pos_iou_as_in_mmdetection():
    from torchvision.models.detection._utils import Matcher

    from wszoo.modeling.matcher import MaxIoUMatcher

    quality = torch.tensor([[0.2, 0.1], [0.5, 0.6]])  # gt 0's best anchor overlaps it by only 0.2
    assert MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3)(quality).tolist() == [-2, 1]
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(quality).tolist() == [1, 1]
