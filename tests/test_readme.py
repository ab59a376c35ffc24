"""The README's usage snippets run as written: every Python block of "Use" and "Predict and draw".

They run in order in one namespace (like a notebook: a later block may use an earlier block's
``model``), offline, in a folder holding a ``photo.jpg`` and the checkout under the name
``wszoo`` (what ``git clone .../wszoo`` gives, for the ``torch.hub.load(..., source="local")``
snippet). A snippet that needed the network would fail here: ``no_network`` refuses it.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import torch
from torchvision.io import write_jpeg

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("Use", "Predict and draw")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```python\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)


def section(text: str, title: str) -> str:
    """The text of the level-2 section ``title`` (up to the next level-2 heading)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if match is None:
        raise AssertionError(f"README.md has no '## {title}' section")
    return match.group(1)


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of ``text``, dedented (a block may sit in a list item)."""
    return [textwrap.dedent(m.group("body")) for m in _FENCE.finditer(text)]


def test_python_blocks_are_found_in_lists_too():
    text = "a\n```python\nx = 1\n```\n- item\n\n  ```python\n  y = x + 1\n  ```\n```bash\nls\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = x + 1\n"]


def _photo(path: Path) -> None:
    g = torch.Generator().manual_seed(0)  # smooth shapes, not noise
    small = torch.randint(0, 256, (3, 15, 20), generator=g, dtype=torch.uint8).float()
    image = torch.nn.functional.interpolate(small[None], size=(240, 320), mode="bilinear")[0]
    write_jpeg(image.round().clamp(0, 255).to(torch.uint8), str(path))


def test_readme_usage_snippets_run(tmp_path, monkeypatch, no_network, isolated_cache, capsys):
    text = (REPO / "README.md").read_text()
    blocks = [(title, block) for title in SECTIONS for block in python_blocks(section(text, title))]
    usage = "".join(block for _, block in blocks)
    # The usage section is written around these; a rewrite that drops one fails here.
    for needed in ("wszoo.Predictor(", "get_model_weights(", 'source="local"', ".draw(", "torch.autocast("):
        assert needed in usage, needed
    _photo(tmp_path / "photo.jpg")
    (tmp_path / "wszoo").symlink_to(REPO, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for index, (title, block) in enumerate(blocks):
        code = compile(block, f"README.md ({title}, python block {index + 1})", "exec")
        exec(code, namespace)  # noqa: S102 - the README's own snippets
    out = capsys.readouterr().out
    assert "{'COCO-val2017': {'box_map': 40.6, 'mask_map': 36.6}}" in out  # the published AP, as printed
    assert "torch.float32 torch.float32" in out  # bf16 autocast still returns float32
    assert namespace["drawing"].shape == (3, 240, 320) and namespace["drawing"].dtype == torch.uint8
    assert namespace["masks"].dtype == torch.bool
