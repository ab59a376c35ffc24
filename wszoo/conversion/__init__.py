"""Conversion of MMDetection checkpoints into wszoo state dicts."""

from .convert import ConversionError, ConversionReport, KeyMapping, convert_state_dict
from .rules import BACKBONE_RULES, DETECTOR_RULES

__all__ = [
    "BACKBONE_RULES",
    "DETECTOR_RULES",
    "ConversionError",
    "ConversionReport",
    "KeyMapping",
    "convert_state_dict",
]
