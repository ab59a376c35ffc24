"""RoIAlign over several levels, spread over CPU threads at inference.

torchvision's CPU ``roi_align`` is one serial loop over the RoIs
(https://github.com/pytorch/vision/blob/main/torchvision/csrc/ops/cpu/roi_align_kernel.cpp),
while the convolutions around it use every core: with 1000 proposals it is one core's work
in the middle of the forward, and the larger the machine the larger its share. Each RoI's
output depends only on that RoI, so the RoIs can be cut into chunks pooled on worker threads
(the kernel runs without the GIL) and written back in place: the result is bit-identical to
one call. ``benchmarks/inference_levers.py`` measures what it saves.

Only inference on the CPU takes the threaded path: with autograd recording, on a GPU, while
exporting or compiling, one call per level is made as before.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import torch
from torch import Tensor
from torchvision.ops import roi_align

__all__ = ["multilevel_roi_align", "MIN_ROIS_PER_THREAD"]

# Below this many RoIs per thread the hand-off costs more than it saves (a 7x7 RoI of the box
# head is pooled in about 0.1-1 ms).
MIN_ROIS_PER_THREAD = 16

_pool: Optional[ThreadPoolExecutor] = None
_pool_key: tuple[int, int] = (0, 0)


def _workers(threads: int) -> ThreadPoolExecutor:
    """A pool of ``threads`` workers, made again after a fork (a DataLoader worker), whose
    copy of the parent's pool has no threads and would never run anything."""
    global _pool, _pool_key
    key = (os.getpid(), threads)
    if _pool is None or _pool_key != key:
        if _pool is not None and _pool_key[0] == key[0]:  # the thread count changed: let the old go
            _pool.shutdown(wait=False)
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wszoo-roi-align")
        _pool_key = key
    return _pool


def _threads_for(features: Sequence[Tensor], num_rois: int) -> int:
    """How many threads pool these RoIs: 1 unless this is CPU inference with enough RoIs."""
    if (
        torch.is_grad_enabled()
        or features[0].device.type != "cpu"
        or torch.compiler.is_exporting()
        or torch.compiler.is_compiling()
        or torch.jit.is_scripting()
    ):
        return 1
    return max(1, min(torch.get_num_threads(), num_rois // MIN_ROIS_PER_THREAD))


def _pool_chunk(feature: Tensor, rois: Tensor, out: Tensor, index: Tensor, *, size: int, scale: float) -> None:
    out[index] = roi_align(feature, rois, output_size=size, spatial_scale=scale, sampling_ratio=0, aligned=True).to(
        out.dtype
    )


def _pool_chunk_on_worker(*args, inference_mode: bool, **kwargs) -> None:
    # Grad and inference modes are thread-local: the worker takes the caller's.
    with torch.inference_mode(inference_mode), torch.no_grad():
        _pool_chunk(*args, **kwargs)


def multilevel_roi_align(
    features: Sequence[Tensor],
    rois: Tensor,
    levels: Tensor,
    *,
    output_size: int,
    strides: Sequence[int],
    out: Tensor,
    threads: Optional[int] = None,
) -> Tensor:
    """Pools each RoI from its level into ``out`` with ``roi_align(aligned=True, sampling_ratio=0)``.

    Args:
        features: One feature map per level, (N, C, H, W).
        rois: (K, 5) boxes as ``(image index, x1, y1, x2, y2)`` in input pixels.
        levels: (K,) the level of each RoI.
        output_size: Side of the pooled grid (7 for boxes, 14 for masks).
        strides: Stride of each level.
        out: (K, C, output_size, output_size), written in place and returned.
        threads: Worker threads (default: ``torch.get_num_threads()`` for CPU inference, else 1).
    """
    if threads is None:
        threads = _threads_for(features, rois.shape[0])
    jobs = []
    for level, (feature, stride) in enumerate(zip(features, strides)):
        index = (levels == level).nonzero(as_tuple=False).squeeze(1)
        if not torch.compiler.is_exporting() and index.numel() == 0:
            continue
        jobs.append((feature, rois[index], index, 1.0 / stride))
    if threads <= 1:
        for feature, level_rois, index, scale in jobs:
            _pool_chunk(feature, level_rois, out, index, size=output_size, scale=scale)
        return out
    # Under autocast (thread-local, so absent on the workers) torchvision pools in float32 and
    # casts back: the same is done here, once per level, before the hand-off.
    # torchvision's kernel reads a contiguous (NCHW) map and copies a channels_last one first:
    # done here once per level, not once per chunk.
    chunks = []
    for feature, level_rois, index, scale in jobs:
        if feature.dtype not in (torch.float32, torch.float64):
            feature, level_rois = feature.float(), level_rois.float()
        feature = feature.contiguous()
        pieces = max(1, min(threads, index.numel() // MIN_ROIS_PER_THREAD))
        chunks += [(feature, r, i, scale) for r, i in zip(level_rois.chunk(pieces), index.chunk(pieces))]
    pool, inference_mode = _workers(threads), torch.is_inference_mode_enabled()
    futures = [
        pool.submit(_pool_chunk_on_worker, f, r, out, i, size=output_size, scale=s, inference_mode=inference_mode)
        for f, r, i, s in chunks
    ]
    for future in futures:
        future.result()
    return out
