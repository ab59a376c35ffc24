"""Publishing a zoo model to the Hugging Face Hub: weights, ``config.json`` and a model card.

A wszoo repository on the Hub holds three files:

* ``model.safetensors``: the converted weights, with the metadata :func:`wszoo.conversion.api.convert_file`
  writes (``wszoo_model``, ``source_sha256``, ``wszoo_converter_version``, ``classes``);
* ``config.json``: builder name, architecture, classes, preprocessing and test settings
  (:data:`wszoo.settings.DEFAULT_SETTINGS`, or those weights written by ``wszoo train`` record in
  their model spec, :mod:`wszoo.model_spec`, which ``model.safetensors`` then carries too);
* ``README.md``: a model card generated from the zoo table (published AP as model-index results,
  source URLs and hashes, the Weight Standardization citation, the license).

huggingface_hub is imported only when used. :mod:`wszoo.hub.hf_load` loads such repositories.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from torch import Tensor

from .._version import __version__
from ..arch import DetectorArch
from ..checkpoint_io import save_safetensors, sha256_of_file
from ..conversion.api import CONVERTER_VERSION, target_shapes
from ..model_spec import SPEC_KEY, check_spec, spec_from_metadata, spec_settings
from ..registry import get_entry
from ..settings import DEFAULT_SETTINGS, InferenceSettings
from ..zoo import LICENSE, WS_CITATION, ZooEntry
from .hf_load import WEIGHTS_FILE, HubWeights, _check_architecture, _metadata
from .weights import load_state_dict as load_native
from .weights import published_weights_file

__all__ = ["CONFIG_FILE", "CARD_FILE", "hub_config", "model_card", "stage", "push_to_hub"]

CONFIG_FILE = "config.json"
CARD_FILE = "README.md"

_MMDET_CITATION = """@article{mmdetection,
  title   = {{MMDetection}: Open MMLab Detection Toolbox and Benchmark},
  author  = {Chen, Kai and Wang, Jiaqi and Pang, Jiangmiao and others},
  journal = {arXiv preprint arXiv:1906.07155},
  year    = {2019}
}
"""


def hub_config(
    entry: ZooEntry, metadata: Mapping[str, str], *, settings: InferenceSettings = DEFAULT_SETTINGS
) -> dict[str, Any]:
    """The ``config.json`` of a Hub repository: what it takes to rebuild and feed the model."""
    config: dict[str, Any] = {
        "library": "wszoo",
        "wszoo_version": __version__,
        "builder": entry.name,
        "task": entry.task,
        "arch": {"type": type(entry.arch).__name__, **dataclasses.asdict(entry.arch)},
        "weights_file": WEIGHTS_FILE,
        "source_sha256": metadata.get("source_sha256"),
        "wszoo_converter_version": metadata.get("wszoo_converter_version"),
    }
    spec = spec_from_metadata(metadata)
    if spec is not None:  # trained with `wszoo train`: how it was built
        config["build_kwargs"] = spec.get("build_kwargs") or {}
    if isinstance(entry.arch, DetectorArch):
        classes = _classes(entry, metadata)
        config.update(
            num_classes=len(classes) + 1,
            classes=list(classes),
            label_offset=1,  # label i is classes[i - 1]; 0 is background
            preprocessing={
                "input": "RGB, uint8 0..255 or float 0..1, (3, H, W)",
                "resize": {"scale": list(settings.image_scale), "keep_ratio": True, "interpolation": "bilinear"},
                "mean": list(settings.image_mean),
                "std": list(settings.image_std),
                "pad_size_divisor": settings.pad_size_divisor,
            },
            test_settings={
                "score_thresh": settings.score_thresh,
                "nms_iou": settings.nms_thresh,
                "max_per_img": settings.detections_per_img,
                "mask_thresh": settings.mask_thresh,
                "rpn_pre_nms_top_n": settings.rpn_pre_nms_top_n,
                "rpn_post_nms_top_n": settings.rpn_post_nms_top_n,
                "rpn_nms_iou": settings.rpn_nms_thresh,
            },
        )
    return config


def _classes(entry: ZooEntry, metadata: Mapping[str, str]) -> tuple[str, ...]:
    recorded = metadata.get("classes")
    return tuple(json.loads(recorded)) if recorded else entry.classes


def _is_published(entry: ZooEntry, metadata: Mapping[str, str]) -> bool:
    return bool(entry.expected_sha256 and metadata.get("source_sha256", "").startswith(entry.expected_sha256))


def _eval_results(entry: ZooEntry) -> list:
    from huggingface_hub import EvalResult

    results = []
    for metric, value, task in (
        ("box AP", entry.box_ap, "object-detection"),
        ("mask AP", entry.mask_ap, "instance-segmentation"),
    ):
        if value is not None:
            results.append(
                EvalResult(
                    task_type=task,
                    dataset_type="coco",
                    dataset_name="COCO val2017",
                    dataset_split="val2017",
                    metric_type="mAP",
                    metric_name=metric,
                    metric_value=value,
                    source_name="MMDetection configs/gn+ws",
                    source_url=entry.config_url,
                )
            )
    return results


def model_card(entry: ZooEntry, *, repo_id: str, metadata: Mapping[str, str]) -> str:
    """The model card (``README.md``) of ``entry`` on the Hub, generated from the zoo table.

    The published AP becomes model-index results only when ``metadata`` ties the weights to the
    published checkpoint; other weights (fine-tuned, random) get a card without them.
    """
    from huggingface_hub import ModelCard, ModelCardData

    published = _is_published(entry, metadata)
    data = ModelCardData(
        library_name="wszoo",
        license=LICENSE,
        datasets=["coco"] if entry.classes and spec_from_metadata(metadata) is None else None,
        pipeline_tag={"object_detection": "object-detection", "instance_segmentation": "image-segmentation"}.get(
            entry.task, "image-feature-extraction"
        ),
        tags=["weight-standardization", "group-normalization", "mmdetection", "torchvision", entry.task],
        model_name=entry.name,
        eval_results=_eval_results(entry) if published else None,
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n" + _card_body(entry, repo_id, metadata, published)))


def _card_body(entry: ZooEntry, repo_id: str, metadata: Mapping[str, str], published: bool) -> str:
    rows = [
        ("architecture", ", ".join(x for x in (entry.backbone, entry.normalization, entry.lr_schedule) if x)),
        ("box AP (COCO val2017)", entry.box_ap if published else None),
        ("mask AP (COCO val2017)", entry.mask_ap if published else None),
        ("training memory (GB)", entry.train_mem_gb),
        ("inference (fps, V100)", entry.inf_fps),
        ("source checkpoint", entry.model_url if published else metadata.get("source_file")),
        ("source sha256", metadata.get("source_sha256")),
        ("config", entry.config_url),
        ("training log", entry.log_url),
        ("converter version", metadata.get("wszoo_converter_version")),
        *_trained_rows(metadata),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows if v is not None)
    outputs = "boxes, labels (1..N), scores" + (
        ", masks (N, 1, H, W) probabilities" if getattr(entry.arch, "with_mask", False) else ""
    )
    origin = (
        f"MMDetection's published `{entry.mmdet_v2_config or entry.name}` checkpoint, converted to native "
        "torchvision modules by wszoo."
        if published
        else f"Weights for wszoo's `{entry.name}` architecture that are **not** MMDetection's published checkpoint; "
        "the published metrics do not apply to them."
    )
    return f"""
# {entry.name}

{entry.task.replace("_", " ").capitalize()} with GN+WS (Group Normalization + Weight Standardization).
{origin}

| | |
|---|---|
{table}

## Use

```python
import wszoo
from torchvision.io import decode_image, ImageReadMode

model = wszoo.get_model("{entry.name}", weights="hf-hub:{repo_id}").eval()
image = decode_image("image.jpg", mode=ImageReadMode.RGB)
detections = model([image])[0]  # {outputs}
```

or `wszoo predict {entry.name} image.jpg --weights hf-hub:{repo_id} --out predictions/`.
`config.json` lists the classes (label `i` is `classes[i - 1]`) and the preprocessing.

## Citation

```bibtex
{WS_CITATION.strip()}

{_MMDET_CITATION.strip()}
```

## License

{LICENSE}, as MMDetection's weights and configs.
"""


def _trained_rows(metadata: Mapping[str, str]) -> list[tuple[str, Any]]:
    spec = spec_from_metadata(metadata)
    if spec is None:
        return []
    settings = spec_settings(spec)
    classes = spec.get("classes") or []
    return [
        ("trained with", f"`wszoo train` ({spec['name']})"),
        ("classes", ", ".join(classes) if len(classes) <= 20 else f"{len(classes)} (see config.json)"),
        ("image scale", "x".join(map(str, settings.image_scale))),
    ]


def _local_weights(entry: ZooEntry, path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A local weights file as ``(native state dict, metadata to publish with it)``.

    Every key and shape must be the model's; the class names are the file's recorded ones, or the
    entry's when the class count is the entry's.
    """
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    recorded = _metadata(path) if path.suffix == ".safetensors" else {}
    spec = spec_from_metadata(recorded, what=str(path))  # written by `wszoo train`
    if spec is not None:
        check_spec(entry, spec, what=str(path))
    _check_architecture(entry, recorded, what=str(path))
    state_dict = load_native(entry, path, num_classes=spec["num_classes"] if spec else entry.num_classes)
    metadata: dict[str, Any] = {
        "format": "pt",
        "wszoo_model": entry.name,
        "wszoo_converter_version": CONVERTER_VERSION,
        "source_file": recorded.get("source_file", path.name),
        "source_sha256": recorded.get("source_sha256") or sha256_of_file(path),
    }
    classifier = state_dict.get("roi_heads.box_predictor.cls_score.weight", state_dict.get("fc.weight"))
    num_classes = classifier.shape[0] if classifier is not None else None
    if spec is not None:
        metadata[SPEC_KEY] = json.dumps(spec)  # hf-hub: loads build it as trained, too
    if isinstance(entry.arch, DetectorArch):
        classes = tuple(spec.get("classes") or ()) if spec is not None else _classes(entry, recorded)
        if len(classes) + 1 != num_classes:
            raise ValueError(
                f"{path} has {num_classes} classes (with background) but records no class names and "
                f"{entry.name} has {entry.num_classes}; save it with a 'classes' metadata entry"
            )
        metadata.update(classes=list(classes), num_classes=num_classes)
    _check_shapes(entry, state_dict, num_classes=num_classes, what=str(path))
    return state_dict, metadata


def _check_shapes(entry: ZooEntry, state_dict: Mapping[str, Tensor], *, num_classes: Optional[int], what: str) -> None:
    expected = target_shapes(entry.arch, num_classes=num_classes)
    wrong = sorted(k for k in expected.keys() & state_dict.keys() if tuple(state_dict[k].shape) != tuple(expected[k]))
    missing, unexpected = sorted(expected.keys() - state_dict.keys()), sorted(state_dict.keys() - expected.keys())
    if wrong or missing or unexpected:
        raise ValueError(
            f"{what} does not fit {entry.name}: wrong shapes {wrong[:5]}, missing {missing[:5]}, "
            f"unexpected {unexpected[:5]} (first five of each)"
        )


def stage(
    entry: ZooEntry,
    folder: Union[str, os.PathLike],
    *,
    repo_id: str,
    weights: Union[None, str, os.PathLike] = None,
    cache_dir: Optional[Path] = None,
    progress: bool = True,
) -> Path:
    """Writes the files :func:`push_to_hub` uploads into ``folder``; returns ``folder``.

    Args:
        entry: The zoo entry.
        folder: An empty or new directory.
        repo_id: The Hub repository (named in the card's usage example).
        weights: A local ``.pth``/``.safetensors`` to publish instead of the published checkpoint
            (which is otherwise downloaded, verified and converted as ``weights="DEFAULT"`` does).
            Weights written by ``wszoo train`` keep their model spec: classes, build options and
            test settings go into ``model.safetensors`` and ``config.json``.
        cache_dir: wszoo's download cache.
        progress: Show a download progress bar.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / WEIGHTS_FILE
    if weights is None:
        if not entry.has_weights:
            raise ValueError(f"{entry.name} has no published weights; pass the weights file to publish")
        shutil.copyfile(published_weights_file(entry, progress=progress, cache_dir=cache_dir), target)
        metadata = _metadata(target)
    else:
        state_dict, metadata = _local_weights(entry, Path(weights).expanduser())
        save_safetensors(state_dict, target, metadata=metadata)
        metadata = _metadata(target)
    settings = spec_settings(spec_from_metadata(metadata))  # trained weights: their own
    (folder / CONFIG_FILE).write_text(json.dumps(hub_config(entry, metadata, settings=settings), indent=1) + "\n")
    (folder / CARD_FILE).write_text(model_card(entry, repo_id=repo_id, metadata=metadata))
    return folder


def push_to_hub(
    name: str,
    *,
    repo_id: str,
    weights: Union[None, str, os.PathLike] = None,
    private: Optional[bool] = None,
    token: Optional[str] = None,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
    create_pr: bool = False,
    endpoint: Optional[str] = None,
    cache_dir: Optional[Path] = None,
    progress: bool = True,
):
    """Uploads a zoo model (weights, ``config.json``, model card) to a Hub repository, creating it if needed.

    Args:
        name: Zoo name or alias.
        repo_id: ``ORG/REPO`` on the Hub.
        weights: A local file to publish instead of the published checkpoint.
        private: Create the repository private (when it does not exist yet).
        token: Hub token (default: huggingface_hub's login).
        revision: Branch to commit to (default: the default branch).
        commit_message: Default ``"Upload <name> (wszoo <version>)"``.
        create_pr: Open a pull request instead of committing.
        endpoint: Hub URL (default: ``HF_ENDPOINT`` or huggingface.co).
        cache_dir: wszoo's download cache.
        progress: Show progress bars.

    Returns:
        huggingface_hub's ``CommitInfo`` (``commit_url``, ``oid``).
    """
    from huggingface_hub import HfApi

    entry = get_entry(name)
    HubWeights.parse(repo_id)  # a clear error before any work
    api = HfApi(endpoint=endpoint, token=token, library_name="wszoo", library_version=__version__)
    with tempfile.TemporaryDirectory(prefix="wszoo-push-") as tmp:
        folder = stage(entry, tmp, repo_id=repo_id, weights=weights, cache_dir=cache_dir, progress=progress)
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message or f"Upload {entry.name} (wszoo {__version__})",
        )
