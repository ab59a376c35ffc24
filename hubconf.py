"""torch.hub entry points: one builder per zoo model (``wszoo.list_models()``).

Pure re-exports of :mod:`wszoo.builders`; building a model touches no network unless weights are
asked for.
"""

dependencies = ["torch", "torchvision", "safetensors", "requests", "tqdm", "filelock"]

from wszoo.builders import *  # noqa: E402,F403
