"""The native detectors: MMDetection's parameters for all 12 variants, outputs, training, errors."""

import pytest
import torch
from reference_data import mmdet_keys

import wszoo
from wszoo.arch import DetectorArch
from wszoo.conversion.api import convert_for, target_shapes
from wszoo.modeling.detector import build_detector

PUBLISHED = [e for e in wszoo.ENTRIES if e.has_weights and e.task != "backbone"]
# Small inputs and few RoIs keep the CPU tests fast; the numerics are the same code paths.
SMALL = dict(image_scale=(256, 160), rpn_post_nms_top_n_test=50, box_batch_size_per_image=32)


@pytest.fixture(autouse=True)
def _offline(no_network):
    """Nothing here may touch the network (conftest's guard, for every test of this file)."""


def _reference_keys(entry):
    return mmdet_keys(entry.mmdet_v2_config)


@pytest.mark.parametrize("entry", PUBLISHED, ids=lambda e: e.name)
def test_variant_has_exactly_mmdetections_parameters(entry):
    """Every MMDetection tensor maps to one native tensor of the same shape (class rows aside),
    nothing is left on either side, and the only extra parameters are torchvision's background rows."""
    reference = _reference_keys(entry)
    source = {name: torch.empty(shape, device="meta") for name, shape, *_ in reference["keys"]}
    converted, report = convert_for(source, arch=entry.arch, num_classes=entry.num_classes, what=entry.name)
    shapes = target_shapes(entry.arch, num_classes=entry.num_classes)
    assert len(converted) == len(shapes) == reference["num_keys"]
    native_params = sum(torch.Size(s).numel() for s in shapes.values())
    # fc_reg gains 4 background rows (1024 weights + 1 bias each); mask logits gain one (256 + 1).
    extra = 4 * (1024 + 1) + (256 + 1 if entry.arch.with_mask else 0)
    assert native_params == reference["num_params"] + extra
    changed = {m.source.rsplit(".", 2)[-2] for m in report.mappings if m.source_shape != m.target_shape}
    assert changed <= {"fc_reg", "conv_logits"}
    with torch.device("meta"):
        model = getattr(wszoo, entry.name)()
    model.load_state_dict(converted, strict=True, assign=True)  # exact key set, on the meta device


@pytest.mark.parametrize("entry", PUBLISHED, ids=lambda e: e.name)
def test_every_published_variant_builds_offline(entry):
    with torch.device("meta"):
        model = getattr(wszoo, entry.name)()
    assert isinstance(model, torch.nn.Module)
    assert model.roi_heads.has_mask() == entry.arch.with_mask


def _image(h=150, w=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize(
    "arch",
    [
        DetectorArch(depth=18),
        DetectorArch(depth=18, with_mask=True),
        DetectorArch(depth=50),
        DetectorArch(depth=101, with_mask=True),
        DetectorArch(depth=50, groups=32, base_width=4, with_mask=True),
        DetectorArch(depth=101, groups=32, base_width=4),
    ],
    ids=["r18-faster", "r18-mask", "r50-faster", "r101-mask", "x50-mask", "x101-faster"],
)
def test_eval_forward_returns_documented_fields(arch):
    torch.manual_seed(0)
    # score_thresh 0 so that randomly initialised heads still return detections to check.
    model = build_detector(arch=arch, score_thresh=0.0, **SMALL).eval()
    images = [_image(), _image(97, 131, seed=1).float() / 255]
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for out, image in zip(outputs, images):
        n = out["boxes"].shape[0]
        assert 0 < n <= 100
        assert out["boxes"].dtype == torch.float32 and out["boxes"].shape == (n, 4)
        assert out["labels"].dtype == torch.int64 and out["scores"].shape == (n,)
        assert int(out["labels"].min()) >= 1 and int(out["labels"].max()) <= 80
        assert bool((out["scores"][:-1] >= out["scores"][1:]).all()), "sorted by score"
        h, w = image.shape[-2:]
        assert float(out["boxes"][:, 0::2].max()) <= w + 1e-3 and float(out["boxes"][:, 1::2].max()) <= h + 1e-3
        assert float(out["boxes"].min()) >= 0
        if arch.with_mask:
            assert out["masks"].shape == (n, 1, h, w)
            assert float(out["masks"].min()) >= 0 and float(out["masks"].max()) <= 1
        else:
            assert "masks" not in out


def _target(with_mask):
    target = {
        "boxes": torch.tensor([[20.0, 30.0, 120.0, 110.0], [60.0, 10.0, 180.0, 70.0]]),
        "labels": torch.tensor([1, 3]),
    }
    if with_mask:
        masks = torch.zeros(2, 150, 200, dtype=torch.uint8)
        masks[0, 30:110, 20:120] = 1
        masks[1, 10:70, 60:180] = 1
        target["masks"] = masks
    return target


def test_train_forward_gives_finite_losses_and_a_step_changes_weights():
    torch.manual_seed(0)
    model = build_detector(arch=DetectorArch(depth=18, with_mask=True), **SMALL).train()
    losses = model([_image()], [_target(True)])
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    sum(losses.values()).backward()
    optimizer.step()
    after = dict(model.named_parameters())
    assert not torch.equal(before["roi_heads.box_head.5.weight"], after["roi_heads.box_head.5.weight"])
    assert not torch.equal(before["backbone.body.layer4.0.conv1.weight"], after["backbone.body.layer4.0.conv1.weight"])
    # frozen_stages=1 (trainable_backbone_layers=3): stem and layer1 never move.
    assert torch.equal(before["backbone.body.conv1.weight"], after["backbone.body.conv1.weight"])
    assert torch.equal(before["backbone.body.layer1.0.conv1.weight"], after["backbone.body.layer1.0.conv1.weight"])


@pytest.mark.slow
def test_depth18_trains_a_few_steps_and_the_loss_falls():
    torch.manual_seed(0)
    model = build_detector(arch=DetectorArch(depth=18), **SMALL).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    image, target = _image(), _target(False)
    totals = []
    for _ in range(8):
        losses = model([image], [target])
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
    assert all(t == t and t < float("inf") for t in totals)
    assert totals[-1] < 0.7 * totals[0], totals


@pytest.mark.parametrize(
    "images,error,match",
    [
        ("not a tensor", TypeError, "list of"),
        ([[1, 2, 3]], TypeError, "not a torch.Tensor"),
        ([torch.zeros(1, 10, 10, dtype=torch.uint8)], ValueError, r"expected \(3, H, W\)"),
        ([torch.zeros(4, 10, 10, dtype=torch.uint8)], ValueError, "RGBA"),
        ([torch.zeros(10, 10)], ValueError, r"expected \(3, H, W\)"),
        ([torch.zeros(3, 0, 10)], ValueError, "empty"),
        ([torch.zeros(3, 10, 10, dtype=torch.int32)], TypeError, "dtype"),
        ([torch.full((3, 10, 10), 200.0)], ValueError, r"\[0, 1\]"),
        ([torch.full((3, 10, 10), -0.5)], ValueError, "not normalised"),
        ([torch.full((3, 10, 10), float("nan"))], ValueError, "NaN"),
        ([], TypeError, "non-empty"),
    ],
)
def test_bad_input_gets_a_clear_error(images, error, match):
    model = _tiny_model()
    with pytest.raises(error, match=match):
        model(images)


_TINY = {}


def _tiny_model():
    if "m" not in _TINY:
        _TINY["m"] = build_detector(arch=DetectorArch(depth=18), **SMALL).eval()
    return _TINY["m"]


def test_training_without_targets_is_a_clear_error():
    model = build_detector(arch=DetectorArch(depth=18), **SMALL).train()
    with pytest.raises(ValueError, match="one target dict per image"):
        model([_image()])
    with pytest.raises(ValueError, match="x2 > x1"):
        model([_image()], [{"boxes": torch.tensor([[10.0, 10.0, 5.0, 20.0]]), "labels": torch.tensor([1])}])


def test_builder_arguments_are_checked():
    with pytest.raises(ValueError, match="num_classes"):
        build_detector(arch=DetectorArch(depth=18), num_classes=1)
    with pytest.raises(ValueError, match="depth"):
        build_detector(arch=DetectorArch(depth=42))
    with pytest.raises(ValueError, match="resize_backend"):
        build_detector(arch=DetectorArch(depth=18), resize_backend="pil")


def test_no_proposals_gives_empty_detections_with_every_field():
    from wszoo.modeling.transforms import ImageMeta

    model = build_detector(arch=DetectorArch(depth=18, with_mask=True), **SMALL).eval()
    features = {k: torch.randn(1, 256, s, s) for k, s in zip(["0", "1", "2", "3", "pool"], [40, 20, 10, 5, 3])}
    with torch.no_grad():
        out = model.roi_heads.predict(features, [torch.zeros(0, 4)], [ImageMeta((90, 120), (160, 213), (1.775, 1.78))])
    assert out[0]["boxes"].shape == (0, 4) and out[0]["labels"].shape == (0,) and out[0]["scores"].shape == (0,)
    assert out[0]["masks"].shape == (0, 1, 90, 120)


@pytest.mark.parametrize("with_mask", [False, True], ids=["faster", "mask"])
def test_a_cpu_batch_runs_image_by_image_and_equals_single_calls(with_mask):
    model = build_detector(arch=DetectorArch(depth=18, with_mask=with_mask), **SMALL).eval()
    with torch.no_grad():  # spread the scores so that there are detections to compare
        model.roi_heads.box_predictor.cls_score.weight.mul_(20)
    images = [_image(seed=1), _image(120, 90, seed=2), _image(seed=3)]
    passes = []
    model.backbone.register_forward_hook(lambda module, inputs, output: passes.append(inputs[0].shape[0]))
    with torch.inference_mode():
        singles = [model([image])[0] for image in images]
        passes.clear()
        batched = model(images)
        assert passes == [1, 1, 1]  # images_per_cpu_pass=1, the default
        model.images_per_cpu_pass = 2
        passes.clear()
        model(images)
        assert passes == [2, 1]
        model.images_per_cpu_pass = None
        passes.clear()
        model(images)
        assert passes == [3]
    assert sum(len(d["boxes"]) for d in singles) > 0
    for single, result in zip(singles, batched):
        assert result.keys() == single.keys()
        for key in single:  # bit for bit: the same passes as single calls
            assert torch.equal(result[key], single[key]), key


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_images_per_cpu_pass_is_checked(value):
    with pytest.raises(ValueError, match="images_per_cpu_pass must be an integer >= 1 or None"):
        build_detector(arch=DetectorArch(depth=18), images_per_cpu_pass=value)
