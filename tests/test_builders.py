"""Builders: loading weights skips the random initialisation and gives the same model."""

from __future__ import annotations

from pathlib import Path

import torch

import wszoo
from wszoo.checkpoint_io import save_safetensors

NAME = "mask_rcnn_r18_fpn_gn_ws"
SMALL = dict(image_scale=(160, 128), rpn_post_nms_top_n_test=50, score_thresh=0.0)


def test_building_with_weights_draws_no_random_numbers_and_leaves_nothing_on_meta(tmp_path: Path):
    torch.manual_seed(0)
    source = wszoo.get_model(NAME, **SMALL).eval()
    path = tmp_path / "weights.safetensors"
    save_safetensors(source.state_dict(), path, metadata={"format": "pt"})

    before = torch.get_rng_state()
    loaded = wszoo.get_model(NAME, weights=path, **SMALL).eval()
    assert torch.equal(torch.get_rng_state(), before), "the random initialisation ran although weights were given"

    tensors = dict(loaded.named_parameters()) | dict(loaded.named_buffers())
    assert not [name for name, t in tensors.items() if t.is_meta]
    assert torch.equal(loaded.transform.mean, source.transform.mean)
    assert torch.equal(loaded.transform.std, source.transform.std)
    frozen = {n for n, p in source.named_parameters() if not p.requires_grad}
    assert frozen and frozen == {n for n, p in loaded.named_parameters() if not p.requires_grad}

    image = torch.randint(0, 256, (3, 96, 128), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    with torch.no_grad():
        want, got = source([image])[0], loaded([image])[0]
    assert len(want["boxes"]) > 0
    for key in want:
        assert torch.equal(got[key], want[key]), key
