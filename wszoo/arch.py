"""Architecture descriptions: the few numbers that tell one GN+WS network from another."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ResNetArch", "DetectorArch"]


@dataclass(frozen=True)
class ResNetArch:
    """A GN+WS (or GN-only) ResNet / ResNeXt.

    Attributes:
        depth: 18, 34, 50 or 101.
        groups: 3x3 conv groups (32 for ResNeXt 32x4d, else 1).
        base_width: Width per group (4 for ResNeXt 32x4d, else 64).
        weight_standardization: WS convs (True) or plain convs (the GN-only ResNeXts).
    """

    depth: int
    groups: int = 1
    base_width: int = 64
    weight_standardization: bool = True


@dataclass(frozen=True)
class DetectorArch:
    """A GN+WS Faster R-CNN (``with_mask=False``) or Mask R-CNN with a ResNet-FPN backbone.

    Attributes:
        depth: ResNet depth (18, 34, 50 or 101).
        groups: 3x3 conv groups of the backbone (32 for ResNeXt 32x4d, else 1).
        base_width: Width per group (4 for ResNeXt 32x4d, else 64).
        with_mask: Mask R-CNN (True) or Faster R-CNN (False).
        weight_standardization: WS convs everywhere MMDetection has them, or plain convs.
    """

    depth: int
    groups: int = 1
    base_width: int = 64
    with_mask: bool = False
    weight_standardization: bool = True

    @property
    def backbone(self) -> ResNetArch:
        return ResNetArch(self.depth, self.groups, self.base_width, self.weight_standardization)
