"""Running built detectors on image files: :mod:`wszoo.inference.predict`."""
