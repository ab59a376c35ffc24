"""Running built detectors: in memory (``predictor``), drawings (``drawing``), image files (``predict``)."""
