"""torch.hub entry points: one builder per zoo model (``wszoo.list_models()``), and each detector's
MMDetection v2 and v3 config names as aliases of its builder.

Pure re-exports of :mod:`wszoo.builders`; building a model touches no network unless weights are
asked for. The aliases (``"mask_rcnn_r50_fpn_gn_ws-all_2x_coco"``) are not identifiers, so they
are module attributes set from :func:`wszoo.builders.hub_aliases`: torch.hub finds an entry point
by ``name in dir(hubconf)``, which also makes ``torch.hub.list`` show them.
"""

dependencies = ["torch", "torchvision", "safetensors", "requests", "tqdm", "filelock"]

from wszoo.builders import *  # noqa: E402,F403
from wszoo.builders import hub_aliases as _hub_aliases  # noqa: E402

globals().update(_hub_aliases())
