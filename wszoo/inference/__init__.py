"""Running built detectors: :mod:`wszoo.inference.predictor` (images in memory),
:mod:`wszoo.inference.drawing` (drawings that read at every size) and
:mod:`wszoo.inference.predict` (image files in, PNG drawings and JSON out)."""
