"""The training loop of the GN+WS configs: MMDetection v2's recipe, resumable, under torchrun.

Defaults reproduce the configs' schedule
(https://github.com/open-mmlab/mmdetection/blob/v2.28.2/configs/_base_/schedules/schedule_1x.py):
SGD (momentum 0.9, weight decay 1e-4 on every parameter), lr 0.02 per 16 images scaled
linearly with the total batch, linear warmup over 500 iterations from 0.001 of the lr, and
x0.1 steps at the start of the epochs of :data:`SCHEDULES`. The detector's own training path
provides the configs' assigners, samplers and losses (L1 box losses; see :mod:`wszoo.heads`).

Each epoch ends with a resumable checkpoint (``last.pth``: model, optimizer, scheduler, grad
scaler, every rank's RNG state and the position in the data) and the weights as
``epoch_<n>.safetensors``. ``max_iters`` or ``checkpoint_every_iters`` also checkpoint inside an
epoch; resuming there continues with the same batches and random draws as an uninterrupted run.
A non-finite loss stops training before the step, leaving the last checkpoint untouched.

Write your own loop when you need another optimizer or schedule: the model is a plain
``nn.Module`` returning a dict of losses, and :mod:`wszoo.data` / :mod:`wszoo.evaluate` work
without this module.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from . import distributed as dist_utils

__all__ = [
    "SCHEDULES", "TrainConfig", "TrainResult", "NonFiniteLossError", "lr_factor", "train", "save_weights",
    "load_trained", "build_from_spec",
]

# name -> (epochs, epochs at whose start the lr is multiplied by 0.1)
SCHEDULES: dict[str, tuple[int, tuple[int, ...]]] = {
    "1x": (12, (8, 11)),
    "2x": (24, (16, 22)),
    "20-23-24e": (24, (20, 23)),
}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped and the last checkpoint was kept."""


@dataclass
class TrainConfig:
    """Training options (MMDetection v2's GN+WS recipe by default).

    Attributes:
        output_dir: Where checkpoints, weights and ``log.jsonl`` go.
        schedule: ``"1x"``, ``"2x"`` or ``"20-23-24e"``.
        epochs: Overrides the schedule's epoch count.
        steps: Overrides the schedule's lr-step epochs.
        batch_size: Images per process (the configs: 2 per GPU on 8 GPUs).
        lr: Learning rate; default ``base_lr * total batch / base_batch``.
        base_lr: The configs' lr for ``base_batch`` images (0.02 for 16).
        base_batch: See ``base_lr``.
        momentum: SGD momentum.
        weight_decay: SGD weight decay, on every parameter.
        warmup_iters: Linear warmup length (iterations).
        warmup_ratio: lr factor at iteration 0 of the warmup.
        grad_clip: Max gradient norm, or None (the configs do not clip).
        amp: ``"bf16"`` or ``"fp16"`` autocast (GPU), or None for float32.
        flip_prob: Horizontal flip probability.
        num_workers: DataLoader workers per process.
        seed: Seed of the data order, flips and sampling.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``.
        log_every: Iterations between JSON log lines.
        checkpoint_every_iters: Also checkpoint every this many iterations (None: epochs only).
        max_iters: Stop (with a resumable checkpoint) after this many iterations in total.
        eval_every: Evaluate on the validation set every this many epochs (0: only at the end).
        resume: True (``output_dir/last.pth`` if present) or a checkpoint path.
        progress: tqdm progress bar on rank 0.
    """

    output_dir: str
    schedule: str = "1x"
    epochs: Optional[int] = None
    steps: Optional[tuple[int, ...]] = None
    batch_size: int = 2
    lr: Optional[float] = None
    base_lr: float = 0.02
    base_batch: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    grad_clip: Optional[float] = None
    amp: Optional[str] = None
    flip_prob: float = 0.5
    num_workers: int = 2
    seed: int = 0
    device: str = "auto"
    log_every: int = 20
    checkpoint_every_iters: Optional[int] = None
    max_iters: Optional[int] = None
    eval_every: int = 1
    resume: Union[bool, str] = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {self.schedule!r}")
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {self.amp!r}")
        if self.steps is not None:
            self.steps = tuple(int(s) for s in self.steps)

    @property
    def total_epochs(self) -> int:
        return self.epochs if self.epochs is not None else SCHEDULES[self.schedule][0]

    @property
    def decay_epochs(self) -> tuple[int, ...]:
        return self.steps if self.steps is not None else SCHEDULES[self.schedule][1]

    def learning_rate(self, world_size: int) -> float:
        """The lr: given, or the linear scaling rule on the total batch."""
        return self.lr if self.lr is not None else self.base_lr * self.batch_size * world_size / self.base_batch


@dataclass
class TrainResult:
    """Where training ended.

    Attributes:
        global_iter: Iterations done in total.
        epoch: Epochs completed.
        finished: Whether the schedule ran to its end (False after ``max_iters``).
        checkpoint: The last resumable checkpoint.
        weights: The last weights file (safetensors), if an epoch ended.
        metrics: The last evaluation's metrics, if any.
    """

    global_iter: int
    epoch: int
    finished: bool
    checkpoint: Optional[Path]
    weights: Optional[Path] = None
    metrics: dict = field(default_factory=dict)


def lr_factor(iteration: int, *, iters_per_epoch: int, steps: tuple[int, ...], warmup_iters: int,
              warmup_ratio: float) -> float:
    """MMDetection v2's lr factor at 0-based ``iteration``: step decay by epoch times linear warmup.

    Warmup: ``1 - (1 - iteration / warmup_iters) * (1 - warmup_ratio)``
    (https://github.com/open-mmlab/mmcv/blob/v1.7.1/mmcv/runner/hooks/lr_updater.py#L121-L135).
    """
    epoch = iteration // iters_per_epoch
    factor = 0.1 ** sum(epoch >= step for step in steps)
    if iteration < warmup_iters:
        factor *= 1 - (1 - iteration / warmup_iters) * (1 - warmup_ratio)
    return factor


# ---- checkpoints -------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _plain_state_dict(model: nn.Module) -> dict[str, Tensor]:
    model = getattr(model, "module", model)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: Union[str, Path], *, spec: Optional[dict] = None) -> Path:
    """Writes the model's weights as safetensors, with ``spec`` (how to rebuild it) as metadata."""
    from .conversion.checkpoint import save_safetensors

    path = Path(path)
    save_safetensors(_plain_state_dict(model), path, metadata={"wszoo_spec": json.dumps(spec or {})})
    return path


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Every rank contributes its RNG state; rank 0 writes atomically."""
    rng = dist_utils.all_gather_object(_rng_state())
    if dist_utils.is_main():
        tmp = path.with_name(path.name + ".tmp")
        torch.save({**state, "rng": rng}, tmp)
        os.replace(tmp, path)
    dist_utils.barrier()


def _load_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def build_from_spec(spec: dict, **overrides: Any) -> nn.Module:
    """Rebuilds a detector from the spec stored with trained weights (no weights loaded)."""
    from . import get_model

    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("build_kwargs", {}).items()}
    kwargs.update(overrides)
    return get_model(spec["name"], num_classes=spec["num_classes"], **kwargs)


def load_trained(path: Union[str, Path], **overrides: Any) -> tuple[nn.Module, dict]:
    """A detector and its spec from weights written by :func:`train` (``.safetensors`` or ``last.pth``).

    Args:
        path: ``epoch_<n>.safetensors``, ``final.safetensors`` or a ``last.pth`` checkpoint.
        **overrides: Build options to change (e.g. ``score_thresh``, ``image_scale``).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from .conversion.checkpoint import read_safetensors

        state_dict, metadata = read_safetensors(path)
        spec = json.loads(metadata.get("wszoo_spec", "{}"))
    else:
        checkpoint = _load_checkpoint(path)
        spec, state_dict = checkpoint.get("model_spec") or {}, checkpoint["model"]
    if not spec.get("name"):
        raise ValueError(f"{path} carries no model spec (it was not written by wszoo.engine.train); build the "
                         "model with wszoo.get_model(name, weights=path, num_classes=...) instead")
    model = build_from_spec(spec, **overrides)
    model.load_state_dict(state_dict, strict=True)
    return model, spec


# ---- the loop ----------------------------------------------------------------------------------


class _JsonLog:
    def __init__(self, path: Path) -> None:
        self.path = path if dist_utils.is_main() else None

    def write(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")


def _loader(dataset, sampler, config: TrainConfig, epoch: int, device: torch.device):
    from torch.utils.data import DataLoader

    from .data import collate

    # Its own generator: creating an iterator must not draw from the global RNG, or a resumed
    # run would diverge from an uninterrupted one.
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=config.num_workers, collate_fn=collate,
                      pin_memory=device.type == "cuda", generator=generator)


def _to_device(images: list[Tensor], targets: list[dict], device: torch.device):
    images = [i.to(device, non_blocking=True) for i in images]
    targets = [{k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in t.items()}
               for t in targets]
    return images, targets


def train(
    model: nn.Module,
    dataset,
    config: TrainConfig,
    *,
    val_dataset=None,
    model_spec: Optional[dict] = None,
) -> TrainResult:
    """Trains ``model`` on ``dataset`` (a :class:`wszoo.data.CocoDataset` with ``train=True``).

    Call it from every process under torchrun (after :func:`wszoo.distributed.init_from_env`,
    or let it initialise). Rank 0 logs and writes files.

    Args:
        model: A wszoo detector (frozen stages already frozen by its builder).
        dataset: Training data.
        config: The recipe.
        val_dataset: Evaluated every ``config.eval_every`` epochs and at the end, if given.
        model_spec: How to rebuild the model (``name``, ``num_classes``, ``classes``,
            ``build_kwargs``); stored with the weights for :func:`load_trained`.

    Raises:
        NonFiniteLossError: The loss became NaN or infinite.
    """
    from .data import GroupedBatchSampler

    device = dist_utils.init_from_env(config.device)
    out = Path(config.output_dir)
    if dist_utils.is_main():
        out.mkdir(parents=True, exist_ok=True)
    dist_utils.barrier()
    rank, world = dist_utils.rank(), dist_utils.world_size()
    torch.manual_seed(config.seed + rank)
    random.seed(config.seed + rank)

    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.learning_rate(world), momentum=config.momentum,
                                weight_decay=config.weight_decay)
    sampler = GroupedBatchSampler([dataset.image_size(i) for i in range(len(dataset))], batch_size=config.batch_size,
                                  seed=config.seed, rank=rank, world_size=world, flip_prob=config.flip_prob)
    iters_per_epoch = len(sampler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(
        it, iters_per_epoch=iters_per_epoch, steps=config.decay_epochs, warmup_iters=config.warmup_iters,
        warmup_ratio=config.warmup_ratio))
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[config.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")

    epoch, start_batch, global_iter = 0, 0, 0
    resume_path = _resume_path(config)
    if resume_path is not None:
        epoch, start_batch, global_iter = _restore(resume_path, model, optimizer, scheduler, scaler, rank, world)
    ddp = _wrap_ddp(model, device)
    log = _JsonLog(out / "log.jsonl")
    state = _State(model, optimizer, scheduler, scaler, config, model_spec, out)
    result = TrainResult(global_iter, epoch, False, resume_path)
    if dist_utils.is_main():
        (out / "config.json").write_text(json.dumps({"train": asdict(config), "model": model_spec or {},
                                                     "world_size": world, "iters_per_epoch": iters_per_epoch}, indent=1))

    while epoch < config.total_epochs:
        sampler.set_epoch(epoch, start_batch)
        stopped = False
        for batch_index, images, targets, seconds in _timed(_loader(dataset, sampler, config, epoch, device),
                                                            start_batch, epoch, iters_per_epoch, config):
            images, targets = _to_device(images, targets, device)
            losses = _step(ddp, images, targets, optimizer, scheduler, scaler, config, amp_dtype, device,
                           where=(epoch, batch_index, global_iter), last=result.checkpoint)
            global_iter += 1
            if global_iter % config.log_every == 0 or global_iter == 1:
                _log_train(log, losses, optimizer, epoch, batch_index, global_iter, seconds, device)
            position = (epoch, batch_index + 1, global_iter)
            at_epoch_end = batch_index + 1 == iters_per_epoch
            if not at_epoch_end and (_due(config.checkpoint_every_iters, global_iter) or _reached(config, global_iter)):
                result.checkpoint = state.checkpoint(*position)
            if not at_epoch_end and _reached(config, global_iter):
                stopped = True
                break
        if stopped:
            break
        epoch, start_batch = epoch + 1, 0
        result.checkpoint = state.checkpoint(epoch, 0, global_iter)
        result.weights = out / f"epoch_{epoch}.safetensors"
        if dist_utils.is_main():
            save_weights(model, result.weights, spec=model_spec)
        if val_dataset is not None and (epoch == config.total_epochs or (config.eval_every and epoch % config.eval_every == 0)):
            result.metrics = _evaluate(model, val_dataset, config, out, epoch, device, amp_dtype, log)
        if _reached(config, global_iter):
            break
    result.global_iter, result.epoch = global_iter, epoch
    result.finished = epoch >= config.total_epochs
    if result.finished and dist_utils.is_main():
        result.weights = save_weights(model, out / "final.safetensors", spec=model_spec)
    dist_utils.barrier()
    return result


def _due(every: Optional[int], global_iter: int) -> bool:
    return bool(every) and global_iter % every == 0


def _reached(config: TrainConfig, global_iter: int) -> bool:
    return config.max_iters is not None and global_iter >= config.max_iters


def _resume_path(config: TrainConfig) -> Optional[Path]:
    if not config.resume:
        return None
    path = Path(config.output_dir) / "last.pth" if config.resume is True else Path(config.resume)
    if path.is_file():
        return path
    if config.resume is True:
        return None  # nothing to resume yet: start fresh
    raise FileNotFoundError(f"resume checkpoint {path} does not exist")


def _restore(path: Path, model, optimizer, scheduler, scaler, rank: int, world: int) -> tuple[int, int, int]:
    checkpoint = _load_checkpoint(path)
    model.load_state_dict(checkpoint["model"], strict=True)
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    if checkpoint["world_size"] != world or len(checkpoint["rng"]) != world:
        raise ValueError(f"{path} was written by {checkpoint['world_size']} processes, this run has {world}; resume "
                         "with the same number (each rank's data shard and RNG state depend on it)")
    _set_rng_state(checkpoint["rng"][rank])
    return checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["global_iter"]


def _wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    if not dist_utils.is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


class _State:
    """What a checkpoint holds, besides the position."""

    def __init__(self, model, optimizer, scheduler, scaler, config, model_spec, out: Path) -> None:
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.config, self.model_spec, self.out = config, model_spec, out

    def checkpoint(self, epoch: int, batch_in_epoch: int, global_iter: int) -> Path:
        path = self.out / "last.pth"
        scheduler_state = self.scheduler.state_dict()  # its lambda is stored as None and rebuilt on resume
        _save_checkpoint(path, {
            "model": _plain_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": scheduler_state,
            "scaler": self.scaler.state_dict(),
            "epoch": epoch, "batch_in_epoch": batch_in_epoch, "global_iter": global_iter,
            "world_size": dist_utils.world_size(),
            "config": asdict(self.config),
            "model_spec": self.model_spec or {},
        })
        return path


def _timed(loader, start_batch: int, epoch: int, total: int, config: TrainConfig):
    """Yields (batch index, images, targets, data seconds) with a tqdm bar on rank 0."""
    from tqdm import tqdm

    bar = tqdm(total=total, initial=start_batch, desc=f"epoch {epoch + 1}/{config.total_epochs}",
               disable=not (config.progress and dist_utils.is_main()), dynamic_ncols=True)
    tick = time.perf_counter()
    for index, (images, targets) in enumerate(loader, start=start_batch):
        data_seconds = time.perf_counter() - tick
        yield index, images, targets, {"data_time": data_seconds, "start": tick}
        bar.update(1)
        tick = time.perf_counter()
    bar.close()


def _step(model, images, targets, optimizer, scheduler, scaler, config, amp_dtype, device, *, where, last):
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        losses = model(images, targets)
    loss = sum(losses.values())
    if not dist_utils.all_true(bool(torch.isfinite(loss.detach())), device):
        epoch, batch_index, global_iter = where
        values = {k: float(v.detach()) for k, v in losses.items()}
        raise NonFiniteLossError(
            f"non-finite loss at iteration {global_iter + 1} (epoch {epoch + 1}, batch {batch_index + 1}) on some rank; "
            f"this rank's losses: {values}. Training stopped without taking the step; the last good checkpoint is "
            f"{last if last is not None else 'none (none was written yet)'}. Try a lower lr, a longer warmup, "
            "grad_clip, or check the annotations (degenerate boxes, labels out of range); then resume from it."
        )
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if config.grad_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return {k: v.detach() for k, v in losses.items()}


def _log_train(log: _JsonLog, losses, optimizer, epoch, batch_index, global_iter, timing, device) -> None:
    names = sorted(losses)
    values = dist_utils.mean_across(torch.stack([losses[n].float() for n in names])).tolist()
    record = {"mode": "train", "epoch": epoch + 1, "iter": batch_index + 1, "global_iter": global_iter,
              "lr": optimizer.param_groups[0]["lr"], "loss": sum(values), **dict(zip(names, values)),
              "time": time.perf_counter() - timing["start"], "data_time": timing["data_time"]}
    if device.type == "cuda":
        record["memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    log.write(record)


def _evaluate(model, dataset, config, out: Path, epoch: int, device, amp_dtype, log: _JsonLog) -> dict:
    from .evaluate import evaluate

    metrics = evaluate(model, dataset, results_file=out / f"results_epoch_{epoch}.json", device=device,
                       num_workers=config.num_workers, progress=config.progress, autocast_dtype=amp_dtype)
    log.write({"mode": "val", "epoch": epoch, **{f"{t}_{k}": v for t, m in metrics.items() for k, v in m.items()}})
    getattr(model, "module", model).train()
    return metrics
