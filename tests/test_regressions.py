"""Regressions found in review: image decoding, trained weights in predict, class rows, recognition."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import wszoo
from wszoo.checkpoint_io import CheckpointError, read_checkpoint
from wszoo.cli import main
from wszoo.conversion.api import recognise
from wszoo.inference.predict import read_image
from wszoo.modeling.transforms import to_uint8
from wszoo.training.checkpoints import save_weights

SMALL = dict(image_scale=(128, 96), rpn_post_nms_top_n_test=10, detections_per_img=3)


def test_16_bit_png_is_scaled_to_uint8(tmp_path):
    values = np.linspace(0, 65535, 40 * 30, dtype=np.uint16).reshape(30, 40)
    Image.fromarray(values).save(tmp_path / "deep.png")  # a 16-bit grayscale PNG
    image = read_image(tmp_path / "deep.png")
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 40)
    assert int(image.max()) == 255 and int(image.min()) == 0
    assert torch.equal(
        to_uint8(torch.tensor([0, 255, 256, 65535], dtype=torch.uint16)),
        torch.tensor([0, 0, 1, 255], dtype=torch.uint8),
    )


def test_exif_orientation_is_applied_as_opencv_does(tmp_path):
    image = Image.new("RGB", (100, 60), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    (tmp_path / "phone.jpg").write_bytes(buffer.getvalue())
    assert read_image(tmp_path / "phone.jpg").shape == (3, 100, 60)


def test_predict_uses_the_classes_of_weights_written_by_training(tmp_path, capsys):
    torch.manual_seed(0)
    model = wszoo.get_model("faster_rcnn_r18_fpn_gn_ws", num_classes=3, **SMALL)
    spec = {"name": "faster_rcnn_r18_fpn_gn_ws", "num_classes": 3, "classes": ["cat", "hat"], "build_kwargs": SMALL}
    weights = save_weights(model, tmp_path / "final.safetensors", spec=spec)
    Image.new("RGB", (64, 48), (90, 120, 30)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "faster_rcnn_r18_fpn_gn_ws",
                str(tmp_path / "a.png"),
                "--weights",
                str(weights),
                "--out",
                str(out),
                "--score-threshold",
                "0",
                "--image-scale",
                "128",
                "96",
                "--quiet",
            ]
        )
        == 0
    )
    detections = json.loads((out / "a.json").read_text())["detections"]
    assert detections and {d["class"] for d in detections} <= {"cat", "hat"}


def test_a_training_checkpoint_given_as_weights_gets_a_pointer_to_load_trained(tmp_path):
    checkpoint = {"model": {"w": torch.zeros(1)}, "optimizer": {}, "model_spec": {"name": "x"}}
    torch.save(checkpoint, tmp_path / "last.pth")
    with pytest.raises(CheckpointError, match="load_trained"):
        wszoo.get_model("faster_rcnn_r18_fpn_gn_ws", weights=tmp_path / "last.pth")
    # The checkpoint reader itself knows no training format: it says what is not a tensor.
    with pytest.raises(CheckpointError, match="'model' is a dict, not a tensor"):
        read_checkpoint(tmp_path / "last.pth")


def test_own_weights_with_coco_named_classes_reinitialise_instead_of_picking_coco_rows(tmp_path):
    from wszoo.training.api import build_training_model

    torch.manual_seed(0)
    source = wszoo.get_model("faster_rcnn_r18_fpn_gn_ws", num_classes=4, **SMALL)
    path = save_weights(source, tmp_path / "mine.safetensors")
    net, spec = build_training_model(
        "faster_rcnn_r18_fpn_gn_ws",
        dataset_classes=["person", "car"],
        weights=str(path),
        build_kwargs=SMALL,
        progress=False,
    )
    assert net.roi_heads.box_predictor.cls_score.weight.shape[0] == 3
    assert torch.equal(
        net.state_dict()["backbone.body.layer4.1.conv2.weight"],
        source.state_dict()["backbone.body.layer4.1.conv2.weight"],
    )


def test_recognition_refuses_ambiguous_layouts():
    entry = wszoo.get_entry("resnext50_32x4d_gn")
    with torch.device("meta"):
        keys = wszoo.get_model(entry.name).state_dict()
    mmdet_layout = {k.replace("norm", "gn"): v for k, v in keys.items()}
    assert recognise(mmdet_layout) is None  # GN-only and GN+WS ResNeXt-50 share their keys
    assert recognise(mmdet_layout, file_name=entry.file_name) is entry
    with_fc = dict(mmdet_layout, **{"fc.weight": torch.empty(1000, 2048, device="meta")})
    assert recognise(with_fc) is None
    r50 = {k.replace("norm", "gn"): v for k, v in wszoo.get_model("resnet50_gn_ws").state_dict().items()}
    assert recognise(dict(r50, **{"fc.weight": torch.empty(1000, 2048)})).name == "resnet50_gn_ws"
