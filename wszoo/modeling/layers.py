"""Weight-Standardized convolution and the small conv-norm-activation block the models use.

``WSConv2d`` reproduces MMCV's ``conv_ws_2d`` exactly
(https://github.com/open-mmlab/mmcv/blob/v2.1.0/mmcv/cnn/bricks/conv_ws.py#L11-L24):
statistics per *output* channel, unbiased standard deviation (``Tensor.std``'s default),
and ``eps`` added to the standard deviation, outside any square root.

Why not timm's ``StdConv2d`` (or ``ScaledStdConv2d``)? timm standardizes with
``F.batch_norm`` over the flattened weight, which uses the *biased* variance and puts ``eps``
*inside* the square root: ``(w - mean) / sqrt(var + eps)`` with ``eps`` 1e-6 to 1e-8. The
published GN+WS weights were trained with ``(w - mean) / (std_unbiased + 1e-5)``. The
reference notes (``mmdet-semantics.md``) measured what the difference costs: ``eps`` inside
the square root moves the C5 feature map of a ResNet-50 by about 12 (caught at once), while the
biased std moves it by only 3e-3, because the GroupNorm after each conv cancels most of the
uniform factor -- an error a loose tolerance would miss. Only the exact formula reproduces
MMDetection's detections.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

__all__ = ["WSConv2d", "standardize_weight", "fold_weight_standardization", "group_norm", "ConvNormAct"]


def standardize_weight(weight: Tensor, eps: float = 1e-5) -> Tensor:
    """Standardizes a conv weight per output channel, as MMCV's ``conv_ws_2d`` does.

    Args:
        weight: Convolution weight of shape (out_channels, in_channels / groups, kh, kw).
        eps: Added to the unbiased standard deviation (not under a square root).

    Returns:
        ``(weight - mean) / (std + eps)`` with mean and std over each output channel.
    """
    out_channels = weight.size(0)
    flat = weight.reshape(out_channels, -1)
    # Same reductions, in the same order, as MMCV, so the float32 result is bit-identical.
    mean = flat.mean(dim=1, keepdim=True).view(out_channels, 1, 1, 1)
    std = flat.std(dim=1, keepdim=True).view(out_channels, 1, 1, 1)
    return (weight - mean) / (std + eps)


class WSConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight is standardized at every use (MMCV's ``ConvWS``).

    The module stores the raw weight, as MMDetection's checkpoints do. Whenever autograd has to
    flow into the weight (training), the standardized weight is recomputed at every call.
    Otherwise -- ``model.eval()`` under ``torch.no_grad()`` or ``torch.inference_mode()``, and
    frozen weights (``requires_grad=False``, e.g. the stem and layer1 in training) -- it is
    computed once and reused, so inference costs what a plain convolution costs. The cache is
    dropped when the weight changes: ``load_state_dict``, any
    in-place update of the parameter (tracked by its version counter), replacing the parameter,
    moving the module (``.to()``, ``.half()``), or going back to ``train()``. Writes through
    ``weight.data`` bypass the version counter; call :meth:`clear_cache` after those.

    Args:
        *args: As for ``nn.Conv2d``.
        eps: Added to the standard deviation, as in MMCV (default 1e-5).
        **kwargs: As for ``nn.Conv2d``.
    """

    def __init__(self, *args, eps: float = 1e-5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.eps = eps
        self._cached_weight: Optional[Tensor] = None
        self._cache_key: Optional[tuple] = None

    def clear_cache(self) -> None:
        """Forgets the cached standardized weight."""
        self._cached_weight = None
        self._cache_key = None

    def standardized_weight(self) -> Tensor:
        """Returns the weight used by the convolution (standardized, cached in eval mode)."""
        weight = self.weight
        if torch.compiler.is_compiling():
            # Under torch.compile the cache's bookkeeping (ids, pointers, version counters) would
            # break the graph at every conv; the standardization is traced into the graph
            # instead, where the compiler fuses it. For no cost at all, fold it first
            # (fold_weight_standardization).
            return standardize_weight(weight, self.eps)
        if torch.is_grad_enabled() and weight.requires_grad:
            # Autograd must see the standardization to reach the raw weight: recompute.
            self.clear_cache()
            return standardize_weight(weight, self.eps)
        key = (
            id(weight),
            weight.data_ptr(),
            weight._version,
            weight.device,
            weight.dtype,
            # A tensor made under inference_mode cannot be used outside it: keep them apart.
            torch.is_inference_mode_enabled(),
        )
        if self._cache_key != key:
            with torch.no_grad():
                self._cached_weight = standardize_weight(weight, self.eps)
            self._cache_key = key
        return self._cached_weight

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.Conv2d's name
        return self._conv_forward(input, self.standardized_weight(), self.bias)

    def train(self, mode: bool = True) -> WSConv2d:
        self.clear_cache()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.clear_cache()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self.clear_cache()
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", eps={self.eps}"


def fold_weight_standardization(module: nn.Module) -> nn.Module:
    """Replaces every :class:`WSConv2d` in ``module`` by a plain ``nn.Conv2d`` holding its
    standardized weight, in place; returns ``module``.

    For inference and deployment (``torch.compile``, ``torch.export``, ONNX): the folded model
    computes the same convolutions with no weight statistics at run time. Its state dict holds
    standardized weights, so do not train it or save it as wszoo weights.
    """
    for name, child in list(module.named_children()):
        if isinstance(child, WSConv2d):
            conv = nn.Conv2d(
                child.in_channels,
                child.out_channels,
                child.kernel_size,
                stride=child.stride,
                padding=child.padding,
                dilation=child.dilation,
                groups=child.groups,
                bias=child.bias is not None,
                padding_mode=child.padding_mode,
                device=child.weight.device,
                dtype=child.weight.dtype,
            )
            with torch.no_grad():
                conv.weight.copy_(standardize_weight(child.weight, child.eps))
                if child.bias is not None:
                    conv.bias.copy_(child.bias)
            conv.weight.requires_grad_(child.weight.requires_grad)
            conv.train(child.training)
            setattr(module, name, conv)
        else:
            fold_weight_standardization(child)
    return module


def group_norm(num_channels: int, *, num_groups: int = 32, eps: float = 1e-5) -> nn.GroupNorm:
    """GroupNorm as MMCV builds it for ``dict(type='GN', num_groups=32)``: eps 1e-5, affine."""
    return nn.GroupNorm(num_groups, num_channels, eps=eps, affine=True)


ConvLayer = Callable[..., nn.Conv2d]
NormLayer = Callable[[int], nn.Module]


class ConvNormAct(nn.Sequential):
    """Conv -> norm -> optional ReLU, MMCV's ``ConvModule`` order; no conv bias when normed.

    Children are ``0`` (conv), ``1`` (norm) and ``2`` (ReLU, when ``activation`` is true).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        conv_layer: ConvLayer = WSConv2d,
        norm_layer: NormLayer = group_norm,
        activation: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            conv_layer(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            norm_layer(out_channels),
        ]
        if activation:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
