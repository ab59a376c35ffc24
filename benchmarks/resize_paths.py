#!/usr/bin/env python
"""How far the 'torch' resize path of wszoo.modeling.transforms.resize_image is from the 'cv2' one.

The 'cv2' path (OpenCV INTER_LINEAR on uint8, what MMCV does) is the reference; the 'torch'
path is ``F.interpolate(bilinear, align_corners=False)`` in float32, rounded to integers. For
each image, resized to its MMDetection keep-ratio size for ``--scale`` (default (1333, 800)),
the table gives the max / mean absolute difference in grey levels, the fraction of values
(pixels x channels) that differ at all and by more than one level, and the median time of each
path (``--repeats``, interleaved).

No photographs ship with the environment (skimage is not installed), so by default it uses
generated natural-ish RGB images: smooth gradients + low- and mid-frequency noise + hard-edged
shapes + pixel noise, in sizes that are upscaled and downscaled to the keep-ratio sizes. Pass
real photographs with ``--images a.jpg b.png ...`` (read with OpenCV).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import median, print_environment, print_table, timed

# (height, width): upscales first, then downscales, one portrait.
DEFAULT_SIZES = [(375, 500), (427, 640), (480, 640), (720, 1280), (1080, 1920), (1200, 900), (3000, 4000)]


def natural_image(height: int, width: int, seed: int) -> np.ndarray:
    """A (H, W, 3) uint8 RGB image with the ingredients of photographs."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for c in range(3):  # smooth gradient in a random direction
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx / width + np.sin(angle) * yy / height
        image[..., c] = 128 + 60 * ramp + rng.uniform(-30, 30)

    def noise_field(cells: int) -> np.ndarray:
        small = rng.normal(0, 1, (cells, max(2, cells * width // height), 3)).astype(np.float32)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)

    image += 40.0 * noise_field(6)  # low frequency: lighting, large blobs
    canvas = np.clip(image, 0, 255).astype(np.uint8)
    unit = max(height, width)
    for _ in range(12):  # hard edges: shapes without anti-aliasing
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
            cv2.rectangle(
                canvas,
                (x0, y0),
                (x0 + int(rng.integers(5, unit // 3)), y0 + int(rng.integers(5, unit // 3))),
                color,
                thickness=-1,
            )
        elif kind == 1:
            cv2.circle(
                canvas,
                (int(rng.integers(0, width)), int(rng.integers(0, height))),
                int(rng.integers(3, unit // 6)),
                color,
                thickness=-1,
            )
        else:
            points = rng.integers(0, [width, height], (5, 2)).astype(np.int32)
            cv2.fillPoly(canvas, [points], color)
    for _ in range(15):  # thin lines (fine detail)
        p0 = tuple(int(v) for v in rng.integers(0, [width, height]))
        p1 = tuple(int(v) for v in rng.integers(0, [width, height]))
        cv2.line(canvas, p0, p1, tuple(int(v) for v in rng.integers(0, 256, 3)), thickness=int(rng.integers(1, 4)))
    # Texture over everything (mid frequency, then fine), so flat shapes are not flat.
    textured = canvas.astype(np.float32) + 14.0 * noise_field(max(height, width) // 24)
    textured += 8.0 * noise_field(max(height, width) // 6)
    noisy = textured + rng.normal(0, 3.0, canvas.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="*", type=Path, default=None, help="photographs to use instead")
    parser.add_argument(
        "--sizes",
        nargs="*",
        default=None,
        metavar="HxW",
        help="generated image sizes (default: " + " ".join(f"{h}x{w}" for h, w in DEFAULT_SIZES) + ")",
    )
    parser.add_argument("--scale", default="1333x800", metavar="LONGxSHORT", help="keep-ratio test scale")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per path and image")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import cv2

    from wszoo.modeling.transforms import rescale_size, resize_image

    scale = tuple(int(v) for v in args.scale.lower().split("x"))
    print_environment(
        {"opencv": cv2.__version__, "cv2 threads": cv2.getNumThreads(), "scale": scale, "repeats": args.repeats}
    )

    inputs: list[tuple[str, np.ndarray]] = []
    if args.images:
        for path in args.images:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SystemExit(f"cannot read {path}")
            inputs.append((path.name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    else:
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes] if args.sizes else DEFAULT_SIZES
        for index, (h, w) in enumerate(sizes):
            inputs.append((f"generated {h}x{w}", natural_image(h, w, args.seed + index)))

    rows = []
    all_diffs = []
    for name, array in inputs:
        image = torch.from_numpy(array).permute(2, 0, 1).contiguous()
        h, w = image.shape[-2:]
        size = rescale_size(h, w, scale)
        paths = {
            b: (lambda b=b, image=image, size=size: resize_image(image, size, backend=b)) for b in ("cv2", "torch")
        }
        out = {b: fn() for b, fn in paths.items()}  # also the warm-up
        times = {b: [] for b in paths}
        for rep in range(args.repeats):
            for b in ("cv2", "torch") if rep % 2 == 0 else ("torch", "cv2"):
                times[b].append(timed(paths[b]))
        diff = (out["cv2"] - out["torch"]).abs()
        all_diffs.append(diff.flatten())
        kind = "up" if size[0] > h else ("down" if size[0] < h else "same")
        t_cv2, t_torch = median(times["cv2"]), median(times["torch"])
        rows.append(
            [
                name,
                f"{size[0]}x{size[1]} ({kind} x{size[0] / h:.3f})",
                int(diff.max()),
                f"{100 * float((diff > 0).float().mean()):.2f}%",
                f"{100 * float((diff > 1).float().mean()):.4f}%",
                f"{float(diff.mean()):.4f}",
                t_cv2 * 1e3,
                t_torch * 1e3,
                f"{t_torch / t_cv2:.2f}",
            ]
        )
    print_table(
        ["image", "resized to", "max |diff|", "differ", "differ > 1", "mean |diff|", "cv2 ms", "torch ms", "torch/cv2"],
        rows,
    )
    everything = torch.cat(all_diffs)
    print(
        f"\nall images: max |diff| {int(everything.max())} grey levels, "
        f"{100 * float((everything > 0).float().mean()):.2f}% of values differ, "
        f"{100 * float((everything > 1).float().mean()):.4f}% by more than one level, "
        f"mean |diff| {float(everything.mean()):.4f}"
    )


if __name__ == "__main__":
    main()
