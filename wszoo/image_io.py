"""Image files in: JPEG/PNG decoding that a damaged file cannot crash.

torchvision's decoders trust the file: a PNG whose pixel data is shorter than its header says
kills the process with a segmentation fault (torchvision 0.29.1), which no ``try`` can catch.
So every file is checked before torchvision's decoder sees it: Pillow parses its structure
(``verify()``: chunk CRCs, markers, a size limit against decompression bombs), and for PNGs
wszoo inflates the pixel data and checks it holds at least as many bytes as the header's size
promises (Pillow itself fills missing rows silently). Only then does torchvision decode the
pixels (EXIF orientation applied as OpenCV's ``IMREAD_COLOR`` does in MMDetection's
``LoadImageFromFile``; 16-bit PNGs scaled to 8 bits). Every failure is an :class:`ImageError`
that names the file. Random damage (truncation, flipped bytes) to JPEGs makes torchvision raise,
not crash; ``tests/inference/test_damaged_images.py`` checks both formats.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from typing import Union

import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

from .modeling.transforms import to_uint8

__all__ = ["ImageError", "check_image_bytes", "decode_image_file"]

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """A file cannot be read as a JPEG or PNG image (not an image, damaged or truncated)."""


def check_image_bytes(data: bytes, path: Union[str, os.PathLike]) -> None:
    """Raises :class:`ImageError` unless ``data`` is a JPEG or a whole PNG (see the module docstring)."""
    if not (data.startswith(_JPEG_MAGIC) or data.startswith(_PNG_MAGIC)):
        raise ImageError(f"{path} is not a JPEG or PNG image (its first bytes are {data[:8]!r})")
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning is Pillow's opinion on size, not damage (its error is kept).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
        if data.startswith(_PNG_MAGIC):
            _check_png_data(data)
    except _DamagedPng as err:
        raise ImageError(f"{path} is a damaged or truncated image ({err})") from None
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        raise ImageError(f"{path} is a damaged or truncated image ({type(err).__name__}: {err})") from None


class _DamagedPng(Exception):
    pass


# Channels per PNG colour type (greyscale, RGB, palette, grey + alpha, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: (x0, y0, dx, dy).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_INFLATE_STEP = 1 << 20


def _png_expected_bytes(width: int, height: int, depth: int, colour: int, interlace: int) -> int:
    """Bytes of filtered scanlines (one filter byte per row) the IHDR promises."""
    if colour not in _PNG_CHANNELS or width == 0 or height == 0:
        raise _DamagedPng(f"invalid IHDR: {width}x{height}, colour type {colour}")
    bits = _PNG_CHANNELS[colour] * depth
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        w, h = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if w and h:
            total += h * (1 + -(-w * bits // 8))
    return total


def _check_png_data(data: bytes) -> None:
    """Inflates the IDAT chunks and checks they hold every row the header promises."""
    position, header, inflater, inflated, ended = 8, None, zlib.decompressobj(), 0, False
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        if len(body) < length:
            raise _DamagedPng(f"the {kind!r} chunk is cut short")
        position += 12 + length
        if kind == b"IHDR" and length >= 13:
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            try:
                pending = body
                while pending and not inflater.eof:
                    inflated += len(inflater.decompress(pending, _INFLATE_STEP))
                    pending = inflater.unconsumed_tail
            except zlib.error as err:
                raise _DamagedPng(f"corrupt pixel data: {err}") from None
        elif kind == b"IEND":
            ended = True
            break
    if header is None:
        raise _DamagedPng("no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if not inflater.eof:
        try:
            inflated += len(inflater.flush())  # output zlib still holds
        except zlib.error as err:
            raise _DamagedPng(f"corrupt pixel data: {err}") from None
    expected = _png_expected_bytes(width, height, depth, colour, interlace)
    if inflated < expected:
        raise _DamagedPng(f"its pixel data holds {inflated} bytes, its header ({width}x{height}) promises {expected}")
    if not ended:
        raise _DamagedPng("no IEND chunk: the file is cut short")


def decode_image_file(path: Union[str, os.PathLike]) -> Tensor:
    """A JPEG or PNG file as a (3, H, W) uint8 RGB tensor; grayscale and RGBA are converted.

    Raises:
        ImageError: The file is missing, not a JPEG/PNG, damaged or truncated; the message names it.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        raise ImageError(f"{path} cannot be read: {err.strerror or err}") from None
    check_image_bytes(data, path)
    try:
        image = decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB, apply_exif_orientation=True
        )
        return to_uint8(image)
    except RuntimeError as err:
        raise ImageError(f"{path} is a damaged or unsupported image: {err}") from None
