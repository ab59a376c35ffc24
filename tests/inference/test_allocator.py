"""wszoo.inference.allocator: freed CPU memory reused instead of faulted in again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wszoo.cli import main
from wszoo.cli import predict as predict_cli
from wszoo.cli import train as train_cli
from wszoo.inference.allocator import _glibc

REPO = Path(__file__).resolve().parents[2]

# Faults taken by allocating, filling and freeing 64 MiB, before and after the call; in a child
# process, as the setting is process-wide and cannot be undone.
_CHILD = """
import resource, torch
from wszoo.inference.allocator import retain_freed_memory

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(64 << 20, dtype=torch.uint8)
    block.fill_(1)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()
print(faults(), retain_freed_memory(), faults(), faults())
"""


@pytest.mark.skipif(_glibc() is None, reason="glibc's mallopt only")
def test_retained_memory_is_reused_without_page_faults():
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    default, applied, first, again = result.stdout.split()
    assert applied == "True"
    # glibc maps a 64 MiB block afresh each time: one fault per 4 KiB page (16384), or one per
    # 2 MiB where transparent huge pages are on; retained, the second block takes the first's pages.
    assert int(default) >= 32
    assert int(again) <= int(default) // 10


def test_predict_and_eval_retain_memory_on_the_cpu_only(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(predict_cli, "retain_freed_memory", lambda: calls.append("predict") or True)
    monkeypatch.setattr(train_cli, "retain_freed_memory", lambda: calls.append("eval") or True)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    argv = ["predict", "faster_rcnn_r18_fpn_gn_ws", str(text), "--weights", "none", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--quiet"]) == 1  # the file is reported, skipped
    missing = str(tmp_path / "missing.json")
    evaluate = ["eval", "--model", "faster_rcnn_r18_fpn_gn_ws", "--images", missing, "--ann", missing]
    assert main([*evaluate, "--device", "cpu", "--quiet"]) != 0
    assert calls == ["predict", "eval"]
    assert main([*evaluate, "--device", "cuda", "--quiet"]) != 0
    assert calls == ["predict", "eval"]
