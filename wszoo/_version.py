"""The one version source of wszoo (read by pyproject.toml and the package)."""

__version__ = "0.2.0"
