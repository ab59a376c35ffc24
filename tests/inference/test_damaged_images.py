"""A damaged PNG among good ones: predict skips it and names it, the dataset reports its path.

The damaged file (:func:`hostile_files.short_png`) crashes torchvision 0.29.1's decoder with a
segmentation fault, so the decoding checks run in a subprocess: a crash there fails the test
instead of killing the test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hostile_files import short_png
from synthetic_coco import make_dataset
from torchvision.io import encode_png, write_file

from wszoo.image_io import ImageError, decode_image_file

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300, cwd=REPO
    )


def good_png(path: Path, seed: int) -> Path:
    generator = torch.Generator().manual_seed(seed)
    write_file(str(path), encode_png(torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=generator)))
    return path


def test_decode_of_a_short_png_raises_naming_it_and_the_process_survives(tmp_path):
    bad = tmp_path / "short.png"
    bad.write_bytes(short_png())
    good = good_png(tmp_path / "good.png", 0)
    code = (
        "import sys\n"
        "from wszoo.image_io import ImageError, decode_image_file\n"
        "try:\n"
        "    decode_image_file(sys.argv[1])\n"
        "except ImageError as err:\n"
        "    print('refused:', err)\n"
        "print('good', tuple(decode_image_file(sys.argv[2]).shape))\n"
    )
    done = run_python(code, str(bad), str(good))
    assert done.returncode == 0, done.stderr  # -11 (SIGSEGV) before
    assert f"refused: {bad} is a damaged or truncated image" in done.stdout
    assert "good (3, 40, 48)" in done.stdout


def test_predict_skips_a_damaged_png_and_processes_the_others(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    good_png(folder / "a.png", 1)
    (folder / "b_damaged.png").write_bytes(short_png())
    good_png(folder / "c.png", 2)
    out = tmp_path / "out"
    code = (
        "import sys\n"
        "from wszoo.cli import main\n"
        "sys.exit(main(['predict', 'mask_rcnn_r18_fpn_gn_ws', sys.argv[1], '--weights', 'none', '--no-progress',\n"
        "               '--image-scale', '64x48', '--device', 'cpu', '--out', sys.argv[2]]))\n"
    )
    done = run_python(code, str(folder), str(out))
    assert done.returncode == 1, done.stderr  # 1: some files skipped; -11 (SIGSEGV) before
    assert "wrote 2 image(s)" in done.stdout and "1 file(s) skipped" in done.stdout
    damaged = folder / "b_damaged.png"
    assert [line for line in done.stderr.splitlines() if "skipped" in line] == [
        line for line in done.stderr.splitlines() if line.startswith(f"skipped {damaged}: ")
    ]
    assert f"skipped {damaged}: {damaged} is a damaged or truncated image" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "c.json", "c.png"]
    assert json.loads((out / "c.json").read_text())["image"] == str(folder / "c.png")


def test_dataset_reports_the_damaged_image_by_path_and_reads_the_others(tmp_path):
    images, ann = make_dataset(tmp_path, num_images=4)
    damaged = images / "0002.png"
    damaged.write_bytes(short_png(64, 64))
    code = (
        "import sys\n"
        "from wszoo.image_io import ImageError\n"
        "from wszoo.training.data import CocoDataset\n"
        "dataset = CocoDataset(sys.argv[1], sys.argv[2], train=True)\n"
        "for index in range(len(dataset)):\n"
        "    try:\n"
        "        image, _ = dataset[index]\n"
        "        print('ok', index, tuple(image.shape))\n"
        "    except ImageError as err:\n"
        "        print('error', index, err)\n"
    )
    done = run_python(code, str(images), str(ann))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["ok", "0"], ["ok", "1"], ["error", "2"], ["ok", "3"]]
    assert f"{damaged} is a damaged or truncated image" in lines[2] and str(ann) in lines[2]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"GIF89a......", "not a JPEG or PNG image"),
        (b"\xff\xd8\xff\xe0 truncated jpeg", "damaged or truncated"),
        (b"\x89PNG\r\n\x1a\n not really", "damaged or truncated"),
    ],
)
def test_other_bad_files_are_image_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as info:
        decode_image_file(path)
    assert str(path) in str(info.value)
    with pytest.raises(ImageError, match="cannot be read"):
        decode_image_file(tmp_path / "missing.png")
