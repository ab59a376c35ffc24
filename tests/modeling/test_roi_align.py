"""RoIAlign spread over CPU threads gives the bits of one serial call, and only runs at inference."""

from __future__ import annotations

import pytest
import torch

from wszoo.modeling import roi_align as threaded
from wszoo.modeling.roi_heads import MMDetRoIAlign

STRIDES = (4, 8, 16, 32)


def _features_and_boxes(num_rois: int = 400, *, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = {str(i): torch.randn(2, 8, 640 // s, 896 // s, generator=g) for i, s in enumerate(STRIDES)}
    boxes = []
    for _ in range(2):  # two images; sides from 4 to 600 px reach all four levels
        xy = torch.rand(num_rois // 2, 2, generator=g) * torch.tensor([300.0, 40.0])
        wh = 4 + torch.rand(num_rois // 2, 2, generator=g) ** 2 * 596
        boxes.append(torch.cat([xy, xy + wh], dim=1))
    return features, boxes


def _pooled(pool: MMDetRoIAlign, features, boxes, *, threads: int) -> torch.Tensor:
    maps = list(features.values())
    rois = torch.cat([torch.cat([b.new_full((b.shape[0], 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
    out = maps[0].new_zeros((rois.shape[0], maps[0].shape[1], pool.output_size, pool.output_size))
    levels = pool.map_levels(rois)
    assert set(levels.tolist()) == {0, 1, 2, 3}
    return threaded.multilevel_roi_align(
        maps, rois, levels, output_size=pool.output_size, strides=STRIDES, out=out, threads=threads
    )


@pytest.mark.parametrize("threads", [2, 3, 8])
@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_threaded_pooling_equals_one_serial_call(threads, mode):
    features, boxes = _features_and_boxes()
    pool = MMDetRoIAlign(7)
    with mode():  # inference tensors can only be written by workers in inference mode
        serial = _pooled(pool, features, boxes, threads=1)
        spread = _pooled(pool, features, boxes, threads=threads)
    assert serial.abs().sum() > 0
    assert torch.equal(serial, spread)


def test_threaded_pooling_under_bf16_autocast_equals_the_serial_autocast_call():
    features, boxes = _features_and_boxes(seed=1)
    features = {k: v.bfloat16() for k, v in features.items()}  # what the FPN gives under autocast
    pool = MMDetRoIAlign(14)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        serial = _pooled(pool, features, boxes, threads=1)
        spread = _pooled(pool, features, boxes, threads=4)
    assert serial.dtype == spread.dtype == torch.bfloat16
    assert torch.equal(serial, spread)


def test_module_takes_the_threaded_path_only_for_cpu_inference(monkeypatch):
    features, boxes = _features_and_boxes()
    pool = MMDetRoIAlign(7)
    chosen = []
    original = threaded._threads_for
    monkeypatch.setattr(threaded, "_threads_for", lambda *a: chosen.append(original(*a)) or chosen[-1])
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    with torch.no_grad():
        pooled = pool(features, boxes)
    assert chosen[-1] == 4
    # With autograd recording (training) one serial call per level is made, and gradients flow.
    features = {k: v.requires_grad_() for k, v in features.items()}
    out = pool(features, boxes)
    assert chosen[-1] == 1
    assert torch.equal(out.detach(), pooled)
    out.sum().backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in features.values())


def test_few_rois_stay_on_one_thread(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    feature = [torch.zeros(1, 1, 8, 8)]
    with torch.no_grad():
        assert threaded._threads_for(feature, threaded.MIN_ROIS_PER_THREAD - 1) == 1
        assert threaded._threads_for(feature, 5 * threaded.MIN_ROIS_PER_THREAD) == 5
        assert threaded._threads_for(feature, 1000) == 16


def test_worker_pool_is_made_again_after_a_fork(monkeypatch):
    first = threaded._workers(2)
    assert threaded._workers(2) is first
    third = threaded._workers(3)  # torch.set_num_threads changed: a new pool, the old one shut down
    assert third is not first and first._shutdown
    first = threaded._workers(2)
    monkeypatch.setattr(threaded.os, "getpid", lambda: -1)  # as in a forked DataLoader worker
    assert threaded._workers(2) is not first
