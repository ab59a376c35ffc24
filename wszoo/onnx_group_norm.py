"""GroupNorm for the ONNX exporter, as an onnxscript function (needs onnxscript; imported by
:func:`wszoo.export.export_onnx` only).

torchlib lowers ``aten.group_norm`` to ``InstanceNormalization`` over ``(N, groups, -1)``, whose
statistics onnxruntime's CPU kernel sums in float32 over all of a group's elements at once
(C/G x H x W: 15,360 for the stem of a 97x413 image at scale 320x256, half a million at full
scale). Its standard deviation is then off by up to ~2e-5 at the stem, about 35 times
PyTorch's error, at each of a ResNet-50 FPN's 65 GroupNorms, and the detections move by up to
6e-3 px. Here the statistics are reduced one axis at a time (over W, then H, then the group's
channels), so no single float32 sum is longer than a row, and match PyTorch's precision; with
the affine folded into one multiply-add, a whole R-50 graph runs as fast as with
``InstanceNormalization``.

Compiled once by ``@script``; the exporter inlines it at every GroupNorm (the graph has the same
nodes as when it was a Python function traced at each of the 45-65 GroupNorms, and an R-18 export
took 0.86-0.99x as long in two paired runs). Inputs are (N, C, H, W), the only GroupNorm inputs
of wszoo's detectors.
"""

from __future__ import annotations

from onnxscript import FLOAT, script
from onnxscript import opset18 as op

__all__ = ["group_norm"]


# The signature is ATen's ``group_norm`` (the exporter matches it by name and position).
@script(default_opset=op)
def group_norm(
    input: FLOAT,  # noqa: A002 - ATen's name
    num_groups: int,
    weight: FLOAT,
    bias: FLOAT,
    eps: float,
    cudnn_enabled: bool,
) -> FLOAT:
    """``aten.group_norm`` on (N, C, H, W) with an affine, in float32 reductions one axis at a time."""
    groups = op.Reshape(op.Constant(value_int=num_groups), op.Constant(value_ints=[1]))
    # (N, C, H, W) -> (N, groups, C / groups, H, W)
    grouped_shape = op.Concat(
        op.Shape(input, start=0, end=1), groups, op.Constant(value_ints=[-1]), op.Shape(input, start=2), axis=0
    )
    grouped = op.Reshape(input, grouped_shape)
    mean = op.ReduceMean(grouped, op.Constant(value_ints=[4]), keepdims=1)  # W
    mean = op.ReduceMean(mean, op.Constant(value_ints=[3]), keepdims=1)  # H
    mean = op.ReduceMean(mean, op.Constant(value_ints=[2]), keepdims=1)  # the group's channels
    centered = op.Sub(grouped, mean)
    # Two-pass variance: sums of squares along W, then means; divided by W at the end.
    var = op.ReduceSumSquare(centered, op.Constant(value_ints=[4]), keepdims=1)
    var = op.ReduceMean(var, op.Constant(value_ints=[3]), keepdims=1)
    var = op.ReduceMean(var, op.Constant(value_ints=[2]), keepdims=1)
    var = op.Div(var, op.CastLike(op.Shape(grouped, start=-1), var))
    rstd = op.Reciprocal(op.Sqrt(op.Add(var, op.CastLike(op.Constant(value_float=eps), var))))
    # The affine folded into one multiply-add per element: centered * (rstd * weight) + bias.
    channel_shape = op.Concat(op.Constant(value_ints=[1]), groups, op.Constant(value_ints=[-1, 1, 1]), axis=0)
    factor = op.Mul(rstd, op.Reshape(op.CastLike(weight, rstd), channel_shape))
    out = op.Add(op.Mul(centered, factor), op.Reshape(op.CastLike(bias, rstd), channel_shape))
    return op.Reshape(out, op.Shape(input))
