"""Two processes under torchrun (gloo, CPU): `wszoo train` trains, checkpoints and evaluates."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from synthetic_coco import make_dataset

from wszoo.cli import main

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_train_and_eval(tmp_path):
    images, ann = make_dataset(tmp_path / "data", num_images=4)
    out = tmp_path / "out"
    small = ["--image-scale", "80x64", "--rpn-post-nms-top-n-test", "20", "--score-threshold", "0.0"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "wszoo.cli",
        "train",
        "--train-images",
        str(images),
        "--train-ann",
        str(ann),
        "--val-images",
        str(images),
        "--val-ann",
        str(ann),
        "--model",
        "faster_rcnn_r18_fpn_gn_ws",
        "--output-dir",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "1",
        "--lr",
        "0.01",
        "--warmup-iters",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--log-every",
        "1",
        "--box-batch-size-per-image",
        "16",
        "--no-progress",
        "--json",
        *small,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
    }
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])  # printed by rank 0 only
    assert summary["finished"] and summary["global_iter"] == 2  # 4 images / (2 processes x batch 1)
    assert 0.0 <= summary["metrics"]["bbox"]["AP"] <= 1.0
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["iters_per_epoch"] == 2
    assert len((out / "log.jsonl").read_text().splitlines()) == 3  # 2 train lines + 1 val line, rank 0 only
    results = json.loads((out / "results_epoch_1.json").read_text())
    assert {r["image_id"] for r in results} == {100, 101, 102, 103}  # both ranks' shards gathered
    assert (out / "final.safetensors").is_file() and (out / "last.pth").is_file()

    # `wszoo eval` on the trained weights (one process) reproduces the numbers. The ranks ran
    # with one thread; the same thread count keeps the float reductions in the same order, and
    # the comparison still allows a last-digit difference of the rounded JSON values.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert (
            main(
                [
                    "eval",
                    "--images",
                    str(images),
                    "--ann",
                    str(ann),
                    "--checkpoint",
                    str(out / "final.safetensors"),
                    "--results",
                    str(tmp_path / "eval.json"),
                    "--device",
                    "cpu",
                    "--workers",
                    "0",
                    "--no-progress",
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    single = json.loads((tmp_path / "eval.json").read_text())
    assert len(single) == len(results)
    for a, b in zip(single, results):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert abs(a["score"] - b["score"]) <= 2e-5
        assert max(abs(x - y) for x, y in zip(a["bbox"], b["bbox"])) <= 2e-3
