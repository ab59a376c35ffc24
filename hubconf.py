"""torch.hub entry points: one builder per zoo model (``wszoo.list_models()``).

Importing this file loads no torchvision and touches no network; models are built on call.
"""

dependencies = ["torch", "torchvision", "safetensors", "requests", "tqdm", "filelock"]

from wszoo.builders import *  # noqa: E402,F401,F403
