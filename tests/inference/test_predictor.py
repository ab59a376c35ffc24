"""``wszoo.Predictor``: every input form gives the same detections; lists, batching, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import encode_png, write_file

import wszoo
from wszoo.coco import COCO_CLASSES
from wszoo.image_io import ImageError

MODEL = "mask_rcnn_r18_fpn_gn_ws"
# Small and fast: 10 proposals, 3 detections; threshold 0 keeps random weights' low scores.
FAST = dict(rpn_post_nms_top_n_test=10, detections_per_img=3)


def pixels(height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def predictor() -> wszoo.Predictor:
    torch.manual_seed(0)
    return wszoo.Predictor(MODEL, weights=None, device="cpu", score_threshold=0.0, image_scale=(96, 64), **FAST)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_tensor_numpy_bgr_pil_and_path_give_identical_detections(predictor, tmp_path):
    image = pixels(40, 56, 0)
    hwc = image.permute(1, 2, 0).numpy()
    write_file(str(tmp_path / "a.png"), encode_png(image))
    want = predictor(image)
    assert len(want["boxes"]) > 0 and want["masks"].dtype == torch.bool and want["masks"].shape == (3, 40, 56)
    assert want["boxes"].device.type == "cpu"
    assert_same(predictor(hwc), want)
    assert_same(predictor(np.ascontiguousarray(hwc[..., ::-1]), bgr=True), want)
    assert_same(predictor(Image.fromarray(hwc)), want)
    assert_same(predictor(tmp_path / "a.png"), want)
    assert_same(predictor(str(tmp_path / "a.png")), want)
    assert not torch.equal(predictor(np.ascontiguousarray(hwc[..., ::-1]))["scores"], want["scores"])  # BGR read as RGB


def test_a_list_returns_a_list_in_order_and_only_equal_sizes_share_a_batch(predictor):
    a, b, c = pixels(40, 56, 1), pixels(48, 32, 2), pixels(40, 56, 3)
    batches = []
    hook = predictor.model.register_forward_pre_hook(lambda m, args: batches.append([tuple(t.shape) for t in args[0]]))
    try:
        results = predictor([a, b, c])
    finally:
        hook.remove()
    assert sorted(batches) == [[(3, 40, 56), (3, 40, 56)], [(3, 48, 32)]]
    assert isinstance(results, list) and len(results) == 3
    assert_same(results[1], predictor(b))  # alone in its batch: bit-identical
    for got, image in zip((results[0], results[2]), (a, c)):  # batched with its equal-size mate
        alone = predictor(image)
        torch.testing.assert_close(got["boxes"], alone["boxes"])
        assert torch.equal(got["labels"], alone["labels"])
    assert predictor([]) == []


def test_a_ready_model_keeps_its_own_masks_thresholded_and_coco_classes(tmp_path):
    torch.manual_seed(0)
    model = wszoo.get_model(MODEL, score_thresh=0.0, image_scale=(96, 64), **FAST)  # masks as probabilities
    image = pixels(40, 56, 4)
    with torch.inference_mode():
        direct = model.eval()([image])[0]
    everything = wszoo.Predictor(model)
    assert everything.classes == COCO_CLASSES and everything.device.type == "cpu"
    got = everything(image)
    assert torch.equal(got["scores"], direct["scores"])
    assert torch.equal(got["masks"], direct["masks"][:, 0] >= 0.5)
    threshold = float(direct["scores"].median())
    above = wszoo.Predictor(model, score_threshold=threshold, classes=["a"] * 80)(image)
    assert above["scores"].tolist() == [s for s in direct["scores"].tolist() if s > threshold]
    with pytest.raises(ValueError, match="apply when the Predictor builds the model"):
        wszoo.Predictor(model, weights="DEFAULT", image_scale=(96, 64))


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.zeros((8, 8), np.uint8), ValueError, r"image 1 is a numpy array of shape \(8, 8\); expected \(H, W, 3\)"),
        (np.zeros((8, 8, 4), np.uint8), ValueError, "convert grayscale or RGBA first"),
        (np.zeros((8, 8, 3), np.float32), TypeError, "image 1 is a numpy array of dtype float32; expected uint8"),
        (torch.zeros(8, 8, 3, dtype=torch.uint8), ValueError, r"expected \(3, H, W\) RGB .*permute\(2, 0, 1\)"),
        (torch.zeros(3, 8, 8, dtype=torch.int32), TypeError, "image 1 is a torch.int32 tensor"),
        (torch.zeros(1, 8, 8), ValueError, r"shape \(1, 8, 8\); expected \(3, H, W\)"),
        (torch.full((3, 8, 8), 255.0), ValueError, r"float image 1 has values in \[255.00, 255.00\]"),
        (42, TypeError, "image 1 is a int; expected a .3, H, W. uint8 or float .* a PIL image, or the path"),
        ("/nonexistent/photo.jpg", FileNotFoundError, "image 1: /nonexistent/photo.jpg does not exist"),
    ],
)
def test_bad_inputs_are_named_with_what_is_accepted(predictor, bad, error, message):
    with pytest.raises(error, match=message):
        predictor([pixels(8, 8, 5), bad])


def test_a_file_that_is_not_an_image_is_named(predictor, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ImageError, match="notes.txt is not a JPEG or PNG image"):
        predictor(tmp_path / "notes.txt")


def test_construction_errors():
    with pytest.raises(ValueError, match="needs a detector"):
        wszoo.Predictor("resnet50_gn_ws", weights=None)
    with pytest.raises(ValueError, match=r"score_threshold must be a number in \[0, 1\]"):
        wszoo.Predictor("faster_rcnn_r18_fpn_gn_ws", weights=None, score_threshold=1.5)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        wszoo.Predictor("faster_rcnn_r18_fpn_gn_ws", weights=None, batch_size=0)
    with pytest.raises(TypeError, match="model must be a zoo name or an nn.Module"):
        wszoo.Predictor(3)


def test_draw_hides_low_scores_from_the_drawing_not_from_the_results(predictor):
    image = pixels(40, 56, 6)
    result = {
        "boxes": torch.tensor([[4.0, 20.0, 30.0, 38.0], [30.0, 22.0, 50.0, 36.0]]),
        "labels": torch.tensor([1, 3]),
        "scores": torch.tensor([0.9, 0.2]),
        "masks": torch.zeros(2, 40, 56, dtype=torch.bool),
    }
    drawn = predictor.draw(image, result)  # default threshold 0.3
    only_first = predictor.draw(image, {k: v[:1] for k, v in result.items()}, threshold=None)
    assert torch.equal(drawn, only_first) and not torch.equal(drawn, image)
    assert len(result["scores"]) == 2  # the result itself is not filtered
    both = predictor.draw([image, image], [result, result], threshold=0.1)
    assert isinstance(both, list) and torch.equal(both[0], both[1]) and not torch.equal(both[0], drawn)
    assert torch.equal(predictor.draw(image, result, threshold=0.95), image)
    assert torch.equal(predictor.draw(image.float() / 255, result), drawn)  # float images drawn as uint8
    with pytest.raises(ValueError, match=r"2 image\(s\) and 1 result\(s\)"):
        predictor.draw([image, image], [result])


def test_a_call_with_draw_returns_the_results_and_their_drawings(predictor):
    images = [pixels(64, 96, 7), pixels(48, 80, 8)]
    results, drawings = predictor(images, draw=True, threshold=0.0)
    assert_same(results[0], predictor(images[0]))
    assert torch.equal(drawings[1], predictor.draw(images[1], results[1], threshold=0.0))
    assert len(results[0]["boxes"]) > 0 and not torch.equal(drawings[0], images[0])  # something was drawn
    result, drawing = predictor(images[0], draw=True, scores=False)
    assert isinstance(result, dict) and torch.equal(drawing, predictor.draw(images[0], result, scores=False))
    with pytest.raises(TypeError, match="need draw=True"):
        predictor(images[0], threshold=0.5)


def test_class_names_come_from_the_built_model():
    torch.manual_seed(0)
    coco = wszoo.Predictor(MODEL, weights=None, device="cpu", image_scale=(96, 64), **FAST)
    assert coco.classes == wszoo.COCO_CLASSES
    five = wszoo.Predictor(MODEL, weights=None, device="cpu", num_classes=5, image_scale=(96, 64), **FAST)
    assert five.classes == ()  # not COCO's names for a 5-class model: labels are shown as numbers
    model = wszoo.get_model("faster_rcnn_r18_fpn_gn_ws", num_classes=3)
    model.meta["categories"] = ["__background__", "cat", "dog"]
    assert wszoo.Predictor(model).classes == ("cat", "dog")
