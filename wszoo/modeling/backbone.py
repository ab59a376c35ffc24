"""ResNet / ResNeXt in MMDetection's "pytorch" style, and the FPN neck of the GN+WS detectors.

Layer constructors are injected: ``conv_layer`` (``WSConv2d`` for GN+WS, ``nn.Conv2d`` for the
GN-only ResNeXt ImageNet backbones) and ``norm_layer`` (``group_norm``). Child names follow
MMDetection's (``conv1``, ``layer1.0.conv2``, ``downsample.0``) except that norms are called
``norm1``/``norm2``/``norm3`` whatever their type (MMDetection names them after the type:
``gn1``, ``bn1``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvLayer, ConvNormAct, NormLayer, WSConv2d, group_norm

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "FPN", "ResNetFPN", "RESNET_STAGE_BLOCKS"]

# Blocks per stage for each depth, as in torchvision and MMDetection.
RESNET_STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); the stride is on the first."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int,
        downsample: Optional[nn.Module],
        groups: int,
        base_width: int,
        conv_layer: ConvLayer,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError(f"BasicBlock supports groups=1, base_width=64; got {groups}, {base_width}")
        self.conv1 = conv_layer(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm_layer(planes)
        self.conv2 = conv_layer(planes, planes, 3, padding=1, bias=False)
        self.norm2 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        out += identity  # in place, as in Bottleneck
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, groups) -> 1x1, MMDetection's ``style='pytorch'`` bottleneck.

    ResNeXt width follows MMDetection's formula
    (https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/backbones/resnext.py#L32-L35):
    ``floor(planes * base_width / 64) * groups``; for ResNet (groups 1) the width is ``planes``.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int,
        downsample: Optional[nn.Module],
        groups: int,
        base_width: int,
        conv_layer: ConvLayer,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        width = planes if groups == 1 else math.floor(planes * base_width / 64) * groups
        self.conv1 = conv_layer(inplanes, width, 1, bias=False)
        self.norm1 = norm_layer(width)
        self.conv2 = conv_layer(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.norm2 = norm_layer(width)
        self.conv3 = conv_layer(width, planes * self.expansion, 1, bias=False)
        self.norm3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        # In place, as MMDetection's ``out += identity``: no fresh image-sized buffer (GroupNorm's
        # backward needs its input, not this output).
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """ResNet / ResNeXt with injected conv and norm constructors.

    ``forward_features`` returns C2..C5 (strides 4, 8, 16, 32). With ``num_classes`` set the
    module also has the ImageNet classifier (global average pool, ``fc``) and ``forward``
    returns logits; otherwise ``forward`` returns the feature list.

    Args:
        depth: 18, 34, 50 or 101.
        groups: Groups of the 3x3 convs (32 for ResNeXt 32x4d).
        base_width: Width per group (4 for ResNeXt 32x4d; 64 for ResNet).
        conv_layer: Conv constructor (``WSConv2d`` or ``nn.Conv2d``).
        norm_layer: Norm constructor taking the channel count.
        num_classes: Size of the classifier, or None for a feature extractor.
    """

    def __init__(
        self,
        *,
        depth: int,
        groups: int = 1,
        base_width: int = 64,
        conv_layer: ConvLayer = WSConv2d,
        norm_layer: NormLayer = group_norm,
        num_classes: Optional[int] = None,
    ) -> None:
        super().__init__()
        if depth not in RESNET_STAGE_BLOCKS:
            raise ValueError(f"depth must be one of {sorted(RESNET_STAGE_BLOCKS)}, got {depth!r}")
        block = BasicBlock if depth < 50 else Bottleneck
        self.conv1 = conv_layer(3, 64, 7, stride=2, padding=3, bias=False)
        self.norm1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        self.out_channels: list[int] = []
        for index, num_blocks in enumerate(RESNET_STAGE_BLOCKS[depth]):
            planes = 64 * 2**index
            stride = 1 if index == 0 else 2
            blocks = []
            for block_index in range(num_blocks):
                downsample = None
                if block_index == 0 and (stride != 1 or inplanes != planes * block.expansion):
                    downsample = nn.Sequential(
                        conv_layer(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                        norm_layer(planes * block.expansion),
                    )
                blocks.append(
                    block(
                        inplanes,
                        planes,
                        stride=stride if block_index == 0 else 1,
                        downsample=downsample,
                        groups=groups,
                        base_width=base_width,
                        conv_layer=conv_layer,
                        norm_layer=norm_layer,
                    )
                )
                inplanes = planes * block.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            self.out_channels.append(inplanes)
        self.num_classes = num_classes
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(inplanes, num_classes)

    def stages(self) -> list[nn.Module]:
        """The modules in order: stem (conv1, norm1) first, then layer1..layer4."""
        return [nn.ModuleList([self.conv1, self.norm1]), self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Returns the outputs of layer1..layer4 (C2..C5)."""
        x = self.maxpool(self.relu(self.norm1(self.conv1(x))))
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features

    def forward(self, x: Tensor):
        features = self.forward_features(x)
        if self.num_classes is None:
            return features
        return self.fc(self.avgpool(features[-1]).flatten(1))


class FPN(nn.Module):
    """MMDetection's FPN with conv+norm laterals and outputs, no activation, P6 by max-pool.

    Reproduces https://github.com/open-mmlab/mmdetection/blob/v3.3.0/mmdet/models/necks/fpn.py#L176-L216
    with ``add_extra_convs=False`` and ``num_outs=5``: the top-down path upsamples with
    ``mode='nearest'`` to the *size* of the finer map (not by a factor 2, which differs for
    odd sizes), and P6 is ``max_pool2d(P5_out, 1, stride=2)``.
    Children follow torchvision's ``FeaturePyramidNetwork``: ``inner_blocks``, ``layer_blocks``.
    """

    def __init__(
        self,
        in_channels_list: Sequence[int],
        out_channels: int = 256,
        *,
        conv_layer: ConvLayer = WSConv2d,
        norm_layer: NormLayer = group_norm,
    ) -> None:
        super().__init__()
        self.inner_blocks = nn.ModuleList(
            ConvNormAct(c, out_channels, 1, conv_layer=conv_layer, norm_layer=norm_layer, activation=False)
            for c in in_channels_list
        )
        self.layer_blocks = nn.ModuleList(
            ConvNormAct(out_channels, out_channels, 3, conv_layer=conv_layer, norm_layer=norm_layer, activation=False)
            for _ in in_channels_list
        )

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        laterals = [block(x) for block, x in zip(self.inner_blocks, features)]
        for i in range(len(laterals) - 1, 0, -1):
            upsampled = F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
            laterals[i - 1] += upsampled  # in place: the same sum, no fresh buffer
        outs = [block(x) for block, x in zip(self.layer_blocks, laterals)]
        outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return outs


class ResNetFPN(nn.Module):
    """ResNet body + FPN, returning torchvision's feature dict ``{'0'..'3', 'pool'}``.

    Has ``out_channels`` as torchvision's detection models expect of a backbone.
    """

    def __init__(self, body: ResNet, fpn: FPN, out_channels: int = 256) -> None:
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        outs = self.fpn(self.body.forward_features(x))
        names = [str(i) for i in range(len(outs) - 1)] + ["pool"]
        return OrderedDict(zip(names, outs))
