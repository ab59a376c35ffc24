"""Hostile and damaged files for the reliability tests, built in the test, never loaded unsafely.

* :func:`short_png`: a PNG whose header promises more rows than its pixel data holds -- the file
  that kills the process with a segmentation fault in torchvision 0.29.1's PNG decoder;
* :func:`hostile_checkpoint`: a ``torch.save`` whose unpickling would run a shell command (it
  touches ``marker``), so a test can prove it was refused and never executed.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import torch
from torchvision.io import encode_png


def short_png(height: int = 24, width: int = 32, *, claimed_height: int = 4000, seed: int = 0) -> bytes:
    """A valid PNG (right CRCs) whose IHDR claims ``claimed_height`` rows but whose data holds ``height``."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    png = bytes(encode_png(image).tolist())
    length = struct.unpack(">I", png[8:12])[0]
    assert png[12:16] == b"IHDR"
    header = bytearray(png[16 : 16 + length])
    header[4:8] = struct.pack(">I", claimed_height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(header)) & 0xFFFFFFFF)
    return png[:16] + bytes(header) + crc + png[16 + length + 4 :]


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_checkpoint(path: Path, marker: Path, *, training: bool = True) -> Path:
    """Writes a checkpoint whose unpickling would run ``touch marker``; returns ``path``.

    With ``training`` it has the layout of a ``last.pth`` (model, optimizer, epoch).
    """
    payload = _RunsCode(marker)
    obj = {"model": {"w": torch.zeros(1)}, "optimizer": payload, "epoch": 1} if training else payload
    torch.save(obj, path)
    return path
