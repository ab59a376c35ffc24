"""``wszoo predict`` on generated images: RGB, grayscale, RGBA, odd sizes, JPEG and PNG, a bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_jpeg, encode_png, write_file

import wszoo
from wszoo.checkpoint_io import save_safetensors
from wszoo.cli import main
from wszoo.coco import COCO_CLASSES
from wszoo.inference import predict
from wszoo.inference import predictor as predictor_module

MODEL = "mask_rcnn_r18_fpn_gn_ws"
# Small and fast: tiny test scale, 10 proposals, 3 detections (random weights score ~1/81: keep them all).
FAST = dict(rpn_post_nms_top_n_test=10, detections_per_img=3)


def pixels(channels: int, height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (channels, height, width), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(a folder of images and a damaged PNG, a text file, a weights file of a seeded random model)."""
    root = tmp_path_factory.mktemp("predict")
    folder = root / "images"
    folder.mkdir()
    write_file(str(folder / "rgb.jpg"), encode_jpeg(pixels(3, 37, 53, 0)))
    write_file(str(folder / "gray.png"), encode_png(pixels(1, 41, 29, 1)))
    Image = pytest.importorskip("PIL.Image")  # torchvision's encode_png writes 1 or 3 channels only
    Image.fromarray(pixels(4, 33, 47, 2).permute(1, 2, 0).numpy(), mode="RGBA").save(folder / "rgba.PNG")
    write_file(str(folder / "same_a.png"), encode_png(pixels(3, 40, 40, 3)))  # two of one size: one batch
    write_file(str(folder / "same_b.png"), encode_png(pixels(3, 40, 40, 4)))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.md").write_text("not an image, and not picked from the folder")
    text = root / "notes.txt"
    text.write_text("given explicitly: reported, the rest still processed")
    torch.manual_seed(0)
    weights = root / "random.safetensors"
    save_safetensors(wszoo.get_model(MODEL).state_dict(), weights, metadata={"format": "pt"})
    return folder, text, weights


def test_predict_cli_writes_drawings_and_json_equal_to_the_model(inputs, tmp_path, capsys, monkeypatch):
    folder, text, weights = inputs
    get_model = wszoo.get_model
    monkeypatch.setattr(predictor_module, "get_model", lambda name, **kwargs: get_model(name, **{**kwargs, **FAST}))
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            MODEL,
            str(folder),
            str(text),
            "--weights",
            str(weights),
            "--score-threshold",
            "0",
            "--draw-threshold",
            "0",
            "--image-scale",
            "128x96",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    stdout, stderr = capsys.readouterr()
    assert code == 1 and "wrote 5 image(s)" in stdout and "2 file(s) skipped" in stdout
    assert f"skipped {text}: {text} is not a JPEG or PNG image" in stderr
    assert f"skipped {folder / 'broken.png'}: " in stderr and "notes.md" not in stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}.{ext}" for stem in ("rgb", "gray", "rgba", "same_a", "same_b") for ext in ("png", "json")
    )

    # The model called directly, on the batches predict makes: equal sizes together (same_a, same_b).
    model = get_model(MODEL, weights=weights, image_scale=(128, 96), score_thresh=0.0, **FAST).eval()
    sources = {stem: next(folder.glob(f"{stem}.*")) for stem in ("rgb", "gray", "rgba", "same_a", "same_b")}
    images = {stem: predict.read_image(path) for stem, path in sources.items()}
    with torch.inference_mode():
        direct = {stem: model([images[stem]])[0] for stem in ("rgb", "gray", "rgba")}
        direct.update(zip(("same_a", "same_b"), model([images["same_a"], images["same_b"]])))
        alone = model([images["same_a"]])[0]
    torch.testing.assert_close(alone["boxes"], direct["same_a"]["boxes"])  # batching changes only rounding
    for stem, source in sources.items():
        image, want = images[stem], direct[stem]
        record = json.loads((out / f"{stem}.json").read_text())
        assert (record["image"], record["height"], record["width"]) == (str(source), *image.shape[1:])
        found = record["detections"]
        assert len(found) == len(want["boxes"]) > 0
        assert [d["box"] for d in found] == want["boxes"].tolist()
        assert [d["score"] for d in found] == want["scores"].tolist()
        assert [d["label"] for d in found] == want["labels"].tolist()
        assert [d["class"] for d in found] == [COCO_CLASSES[i - 1] for i in want["labels"].tolist()]
        for detection, mask in zip(found, want["masks"][:, 0] >= 0.5):
            assert torch.equal(rle_decode(detection["mask"]), mask)
        drawn = predict.read_image(out / f"{stem}.png")
        assert drawn.shape == image.shape and not torch.equal(drawn, image)


def rle_decode(rle: dict) -> torch.Tensor:
    height, width = rle["size"]
    values = torch.arange(len(rle["counts"])) % 2
    flat = torch.repeat_interleave(values, torch.tensor(rle["counts"]))
    return flat.reshape(width, height).t().bool()


def test_read_image_converts_grayscale_and_rgba_to_rgb(inputs):
    folder, text, _ = inputs
    gray, rgba = predict.read_image(folder / "gray.png"), predict.read_image(folder / "rgba.PNG")
    assert gray.shape == (3, 41, 29) and torch.equal(gray[0], gray[1]) and torch.equal(gray[0], pixels(1, 41, 29, 1)[0])
    assert rgba.shape == (3, 33, 47) and torch.equal(rgba, pixels(4, 33, 47, 2)[:3])
    with pytest.raises(predict.ImageError, match="not a JPEG or PNG image"):
        predict.read_image(text)
    with pytest.raises(predict.ImageError, match="damaged"):
        predict.read_image(folder / "broken.png")


def test_find_images_keeps_files_and_lists_folders(inputs, tmp_path):
    folder, text, _ = inputs
    found = predict.find_images([folder, text])
    assert [p.name for p in found] == [
        "broken.png",
        "gray.png",
        "rgb.jpg",
        "rgba.PNG",
        "same_a.png",
        "same_b.png",
        "notes.txt",
    ]
    with pytest.raises(FileNotFoundError, match="neither a file nor a folder"):
        predict.find_images([tmp_path / "missing"])


def test_mask_rle_round_trips():
    gen = torch.Generator().manual_seed(5)
    for mask in (
        torch.rand(7, 5, generator=gen) > 0.5,
        torch.ones(3, 4, dtype=torch.bool),
        torch.zeros(2, 2, dtype=torch.bool),
    ):
        rle = predict.mask_to_rle(mask)
        assert rle["size"] == list(mask.shape) and torch.equal(rle_decode(rle), mask)
    assert predict.mask_to_rle(torch.ones(2, 2, dtype=torch.bool))["counts"] == [0, 4]  # COCO starts with zeros


def test_predict_saves_and_draws_only_detections_above_its_threshold(tmp_path):
    torch.manual_seed(0)
    model = wszoo.get_model(MODEL, score_thresh=0.0, image_scale=(64, 48), **FAST)
    image = pixels(3, 30, 40, 6)
    write_file(str(tmp_path / "a.png"), encode_png(image))
    with torch.inference_mode():
        scores = model.eval()([image])[0]["scores"]
    threshold = float(scores.median())
    predict.predict(
        model,
        [tmp_path / "a.png"],
        out_dir=tmp_path / "out",
        classes=COCO_CLASSES,
        score_threshold=threshold,
        progress=False,
    )
    found = json.loads((tmp_path / "out" / "a.json").read_text())["detections"]
    assert [d["score"] for d in found] == [s for s in scores.tolist() if s > threshold] and found


def test_backbones_are_refused(capsys):
    assert main(["predict", "resnet50_gn_ws", "x.png"]) == 2
    assert "needs a detector" in capsys.readouterr().err


def test_predict_cli_vocabulary_draw_threshold_hide_options_and_the_old_image_scale(tmp_path, capsys, monkeypatch):
    get_model = wszoo.get_model
    monkeypatch.setattr(predictor_module, "get_model", lambda name, **kwargs: get_model(name, **{**kwargs, **FAST}))
    image = pixels(3, 30, 40, 7)
    write_file(str(tmp_path / "a.png"), encode_png(image))

    def run(name: str, *options: str) -> tuple[int, str, str, dict, torch.Tensor]:
        torch.manual_seed(0)  # weights 'none': the same random model every run
        argv = ["predict", MODEL, str(tmp_path / "a.png"), "--weights", "none", "--device", "cpu"]
        code = main([*argv, "--out", str(tmp_path / name), "--score-threshold", "0", *options])
        out, err = capsys.readouterr()
        record = json.loads((tmp_path / name / "a.json").read_text())
        return code, out, err, record, predict.read_image(tmp_path / name / "a.png")

    code, out, err, record, full = run("new", "--image-scale", "64x48", "--draw-threshold", "0", "--no-progress")
    assert code == 0 and out == f"wrote 1 image(s) and JSON to {tmp_path / 'new'}\n" and err == ""
    assert record["detections"] and not torch.equal(full, image)
    code, out, err, old, _ = run("old", "--image-scale", "64", "48", "--draw-threshold", "0")
    assert code == 0 and old["detections"] == record["detections"]  # the same scale
    assert "`--image-scale 64 48` is the old form; write `--image-scale 64x48`" in err
    code, out, err, other_scale, _ = run("quiet", "--image-scale", "96", "72", "--quiet")
    assert (code, out, err) == (0, "", "") and other_scale["detections"] != record["detections"]
    # The drawing threshold hides detections from the PNG, never from the JSON.
    code, _, _, hidden, drawn = run("hidden", "--image-scale", "64x48", "--draw-threshold", "1", "--quiet")
    assert hidden["detections"] == record["detections"] and torch.equal(drawn, image)
    # Hide options: no boxes and no masks leaves the image as it was.
    _, _, _, _, bare = run("bare", "--image-scale", "64x48", "--draw-threshold", "0", "--no-boxes", "--no-masks")
    _, _, _, _, no_scores = run("no_scores", "--image-scale", "64x48", "--draw-threshold", "0", "--no-scores")
    assert torch.equal(bare, image) and not torch.equal(no_scores, full) and not torch.equal(no_scores, image)
