"""Rename rules from MMDetection's checkpoint keys to wszoo's, as ordered data.

Each rule is ``(pattern, replacement)``: the first rule whose regular expression matches the
*whole* key renames it. Class-dependent rows are reordered separately
(:mod:`wszoo.conversion.convert`). The source layout is that of the published checkpoints
(``tests/data/mmdet_keys``); the target layout is :func:`wszoo.modeling.detector.build_detector`'s.
"""

from __future__ import annotations

import re

__all__ = ["BACKBONE_RULES", "DETECTOR_RULES", "backbone_rules"]

_PARAM = r"(weight|bias)"


def backbone_rules(source_prefix: str, target_prefix: str) -> list[tuple[str, str]]:
    """ResNet / ResNeXt rules between two key prefixes (MMDetection norms ``gnK`` -> ``normK``)."""
    s, t = re.escape(source_prefix), target_prefix
    return [
        # ---- stem ----
        (rf"{s}conv1\.weight", rf"{t}conv1.weight"),
        (rf"{s}gn1\.{_PARAM}", rf"{t}norm1.\1"),
        # ---- residual blocks ----
        (rf"{s}(layer\d\.\d+)\.conv(\d)\.weight", rf"{t}\1.conv\2.weight"),
        (rf"{s}(layer\d\.\d+)\.gn(\d)\.{_PARAM}", rf"{t}\1.norm\2.\3"),
        (rf"{s}(layer\d\.\d+)\.downsample\.([01])\.{_PARAM}", rf"{t}\1.downsample.\2.\3"),
        # ---- ImageNet classifier (backbone checkpoints only) ----
        (rf"{s}fc\.{_PARAM}", rf"{t}fc.\1"),
    ]


# An ImageNet backbone checkpoint holds the backbone's own keys (MMDetection loads it into
# ``model.backbone``), so there is no prefix on either side.
BACKBONE_RULES: list[tuple[str, str]] = backbone_rules("", "")

DETECTOR_RULES: list[tuple[str, str]] = [
    *backbone_rules("backbone.", "backbone.body."),
    # ---- FPN neck: ConvModule (conv, gn) -> ConvNormAct (0, 1) ----
    (r"neck\.lateral_convs\.(\d)\.conv\.weight", r"backbone.fpn.inner_blocks.\1.0.weight"),
    (rf"neck\.lateral_convs\.(\d)\.gn\.{_PARAM}", r"backbone.fpn.inner_blocks.\1.1.\2"),
    (r"neck\.fpn_convs\.(\d)\.conv\.weight", r"backbone.fpn.layer_blocks.\1.0.weight"),
    (rf"neck\.fpn_convs\.(\d)\.gn\.{_PARAM}", r"backbone.fpn.layer_blocks.\1.1.\2"),
    # ---- RPN head: torchvision's RPNHead ----
    (rf"rpn_head\.rpn_conv\.{_PARAM}", r"rpn.head.conv.0.0.\1"),
    (rf"rpn_head\.rpn_cls\.{_PARAM}", r"rpn.head.cls_logits.\1"),
    (rf"rpn_head\.rpn_reg\.{_PARAM}", r"rpn.head.bbox_pred.\1"),
    # ---- box head: Shared4Conv1FCBBoxHead -> ConvFCBoxHead + FastRCNNPredictor ----
    (r"roi_head\.bbox_head\.shared_convs\.(\d)\.conv\.weight", r"roi_heads.box_head.\1.0.weight"),
    (rf"roi_head\.bbox_head\.shared_convs\.(\d)\.gn\.{_PARAM}", r"roi_heads.box_head.\1.1.\2"),
    (rf"roi_head\.bbox_head\.shared_fcs\.0\.{_PARAM}", r"roi_heads.box_head.5.\1"),
    (rf"roi_head\.bbox_head\.fc_cls\.{_PARAM}", r"roi_heads.box_predictor.cls_score.\1"),
    (rf"roi_head\.bbox_head\.fc_reg\.{_PARAM}", r"roi_heads.box_predictor.bbox_pred.\1"),
    # ---- mask head: FCNMaskHead -> ConvMaskHead + MaskRCNNPredictor ----
    (r"roi_head\.mask_head\.convs\.(\d)\.conv\.weight", r"roi_heads.mask_head.\1.0.weight"),
    (rf"roi_head\.mask_head\.convs\.(\d)\.gn\.{_PARAM}", r"roi_heads.mask_head.\1.1.\2"),
    (rf"roi_head\.mask_head\.upsample\.{_PARAM}", r"roi_heads.mask_predictor.conv5_mask.\1"),
    (rf"roi_head\.mask_head\.conv_logits\.{_PARAM}", r"roi_heads.mask_predictor.mask_fcn_logits.\1"),
]
