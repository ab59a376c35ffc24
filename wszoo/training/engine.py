"""The training loop of the GN+WS configs: MMDetection v2's recipe, resumable, under torchrun.

Defaults reproduce the configs' schedule
(https://github.com/open-mmlab/mmdetection/blob/v2.28.2/configs/_base_/schedules/schedule_1x.py):
SGD (momentum 0.9, weight decay 1e-4 on every parameter), lr 0.02 per 16 images scaled
linearly with the total batch, linear warmup over 500 iterations from 0.001 of the lr, and
x0.1 steps at the start of the epochs of :data:`SCHEDULES`. The detector's own training path
provides the configs' assigners, samplers and losses (L1 box losses; see :mod:`wszoo.modeling.losses`).

Each epoch ends with a resumable checkpoint (``last.pth``: model, optimizer, scheduler, grad
scaler, every rank's RNG state and the position in the data) and the weights as
``epoch_<n>.safetensors``. ``max_iters`` or ``checkpoint_every_iters`` also checkpoint inside an
epoch; resuming there continues with the same batches and random draws as an uninterrupted run.
A non-finite loss or non-finite gradients stop training before the step, and a checkpoint is
never written with non-finite weights, so the checkpoint the error names holds finite weights.
Resuming truncates ``log.jsonl`` to the checkpoint's iteration, so no iteration is logged twice.

Write your own loop when you need another optimizer or schedule: the model is a plain
``nn.Module`` returning a dict of losses, and :mod:`wszoo.training.data` / :mod:`wszoo.training.evaluate` work
without this module.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import distributed as dist_utils
from .checkpoints import load_checkpoint, plain_state_dict, save_checkpoint, save_weights, set_rng_state
from .data import GroupedBatchSampler, collate
from .evaluate import evaluate

__all__ = [
    "SCHEDULES",
    "TrainConfig",
    "TrainResult",
    "NonFiniteLossError",
    "NonFiniteGradientError",
    "NonFiniteWeightsError",
    "lr_factor",
    "seed_everything",
    "train",
]


# name -> (epochs, epochs at whose start the lr is multiplied by 0.1)
SCHEDULES: dict[str, tuple[int, tuple[int, ...]]] = {
    "1x": (12, (8, 11)),
    "2x": (24, (16, 22)),
    "20-23-24e": (24, (20, 23)),
}


class NonFiniteLossError(RuntimeError):
    """The loss (or, for the subclasses, the gradients or weights) became NaN or infinite;
    training stopped before the step, and the last checkpoint, which holds finite weights, was kept."""


class NonFiniteGradientError(NonFiniteLossError):
    """The loss was finite but some gradients were not; the step was not taken."""


class NonFiniteWeightsError(NonFiniteLossError):
    """The weights became non-finite (e.g. a huge lr); no checkpoint was written with them."""


def seed_everything(seed: int) -> None:
    """Seeds torch, Python's ``random`` and NumPy: call it before building the model, so that
    its random initialisation, and so the whole run, is reproducible."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


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
        keep_checkpoints: Keep only the newest this many ``epoch_<n>.safetensors`` (MMDetection's
            ``max_keep_ckpts``); None keeps all. ``final.safetensors`` and ``last.pth`` stay.
        resume: True (``output_dir/last.pth`` if present) or a checkpoint path.
        progress: tqdm progress bar on rank 0, showing the current loss and lr.

    Invalid values (``epochs <= 0``, ``batch_size <= 0``, ``lr <= 0``, steps beyond the epochs,
    negative workers or warmup, ...) raise a ``ValueError`` giving the valid range.
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
    keep_checkpoints: Optional[int] = None
    resume: Union[bool, str] = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {self.schedule!r}")
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {self.amp!r}")
        _int_at_least("epochs", self.epochs, 1, optional=True)
        if self.steps is not None:
            self.steps = tuple(self.steps)
            for step in self.steps:
                if not _is_int(step) or not 1 <= step <= self.total_epochs:
                    raise ValueError(
                        f"steps must be epochs in 1..{self.total_epochs} (the lr is multiplied by 0.1 at the start "
                        f"of each), got {list(self.steps)}"
                    )
        _int_at_least("batch_size", self.batch_size, 1)
        _number_above("lr", self.lr, optional=True)
        _number_above("base_lr", self.base_lr)
        _int_at_least("base_batch", self.base_batch, 1)
        _number_above("momentum", self.momentum, at_least=True)
        _number_above("weight_decay", self.weight_decay, at_least=True)
        _int_at_least("warmup_iters", self.warmup_iters, 0)
        _in_unit_interval("warmup_ratio", self.warmup_ratio)
        _number_above("grad_clip", self.grad_clip, optional=True)
        _in_unit_interval("flip_prob", self.flip_prob)
        _int_at_least("num_workers", self.num_workers, 0)
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in 0..2**32-1, got {self.seed!r}")
        _int_at_least("log_every", self.log_every, 1)
        _int_at_least("checkpoint_every_iters", self.checkpoint_every_iters, 1, optional=True)
        _int_at_least("max_iters", self.max_iters, 1, optional=True)
        _int_at_least("eval_every", self.eval_every, 0)
        _int_at_least("keep_checkpoints", self.keep_checkpoints, 1, optional=True)

    @property
    def total_epochs(self) -> int:
        return self.epochs if self.epochs is not None else SCHEDULES[self.schedule][0]

    @property
    def decay_epochs(self) -> tuple[int, ...]:
        return self.steps if self.steps is not None else SCHEDULES[self.schedule][1]

    def learning_rate(self, world_size: int) -> float:
        """The lr: given, or the linear scaling rule on the total batch."""
        return self.lr if self.lr is not None else self.base_lr * self.batch_size * world_size / self.base_batch


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_at_least(name: str, value: Any, low: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_int(value) or value < low:
        none = " or None" if optional else ""
        raise ValueError(f"{name} must be an integer >= {low}{none}, got {value!r}")


def _number_above(name: str, value: Any, *, at_least: bool = False, optional: bool = False) -> None:
    if optional and value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value < 0 if at_least else value <= 0):
        valid = ">= 0" if at_least else "> 0"
        raise ValueError(f"{name} must be a finite number {valid}{' or None' if optional else ''}, got {value!r}")


def _in_unit_interval(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


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


def lr_factor(
    iteration: int, *, iters_per_epoch: int, steps: tuple[int, ...], warmup_iters: int, warmup_ratio: float
) -> float:
    """MMDetection v2's lr factor at 0-based ``iteration``: step decay by epoch times linear warmup.

    Warmup: ``1 - (1 - iteration / warmup_iters) * (1 - warmup_ratio)``
    (https://github.com/open-mmlab/mmcv/blob/v1.7.1/mmcv/runner/hooks/lr_updater.py#L121-L135).
    """
    epoch = iteration // iters_per_epoch
    factor = 0.1 ** sum(epoch >= step for step in steps)
    if iteration < warmup_iters:
        factor *= 1 - (1 - iteration / warmup_iters) * (1 - warmup_ratio)
    return factor


# ---- the run state ----------------------------------------------------------------------------


class _JsonLog:
    """Appends JSON lines to ``log.jsonl`` on rank 0; other ranks write nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path if dist_utils.is_main() else None

    def write(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")


@dataclass
class _Run:
    """Everything a training run carries from one iteration to the next.

    Attributes:
        model: The detector (not wrapped).
        ddp: What is called for losses: the model, or its ``DistributedDataParallel`` wrapper.
        epoch: Epochs completed.
        batch: Index of the next batch in the current epoch.
        global_iter: Iterations done in total.
        checkpoint: The last resumable checkpoint written (or resumed from).
        weights: The last weights file written.
        metrics: The last evaluation's metrics.
    """

    model: nn.Module
    ddp: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    sampler: GroupedBatchSampler
    config: TrainConfig
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    out: Path
    log: _JsonLog
    spec: Optional[dict]
    epoch: int = 0
    batch: int = 0
    global_iter: int = 0
    checkpoint: Optional[Path] = None
    weights: Optional[Path] = None
    metrics: dict = field(default_factory=dict)
    bar: Optional[tqdm] = None

    @property
    def iters_per_epoch(self) -> int:
        return len(self.sampler)

    def save_checkpoint(self) -> Path:
        """Writes ``last.pth`` at the current position and remembers it; refuses non-finite weights."""
        state = plain_state_dict(self.model)
        finite = all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())
        if not dist_utils.all_true(finite, self.device):
            bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
            raise NonFiniteWeightsError(
                f"the weights became non-finite by iteration {self.global_iter} (epoch {self.epoch}), with a finite "
                f"loss and finite gradients (on this rank: {bad[:5]}); not checkpointed. {_advice(self)}"
            )
        path = self.out / "last.pth"
        save_checkpoint(
            path,
            {
                "model": state,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),  # its lambda is stored as None and rebuilt on resume
                "scaler": self.scaler.state_dict(),
                "epoch": self.epoch,
                "batch_in_epoch": self.batch,
                "global_iter": self.global_iter,
                "world_size": dist_utils.world_size(),
                "config": asdict(self.config),
                "model_spec": self.spec or {},
            },
        )
        self.checkpoint = path
        return path


# ---- the loop ----------------------------------------------------------------------------------


def train(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    val_dataset: Optional[Dataset] = None,
    model_spec: Optional[dict] = None,
) -> TrainResult:
    """Trains ``model`` on ``dataset`` (a :class:`wszoo.training.data.CocoDataset` with ``train=True``).

    Call it from every process under torchrun (after :func:`wszoo.training.distributed.init_from_env`,
    or let it initialise). Rank 0 logs and writes files.

    Args:
        model: A wszoo detector (frozen stages already frozen by its builder).
        dataset: Training data.
        config: The recipe.
        val_dataset: Evaluated every ``config.eval_every`` epochs and at the end, if given.
        model_spec: How to rebuild the model (``name``, ``num_classes``, ``classes``,
            ``build_kwargs``); stored with the weights for :func:`wszoo.training.checkpoints.load_trained`.

    Raises:
        NonFiniteLossError: The loss became NaN or infinite.
    """
    run = _setup(model, dataset, config, model_spec)
    while run.epoch < config.total_epochs:
        if not _train_epoch(run, dataset):
            break  # max_iters reached inside the epoch (checkpointed there)
        _end_epoch(run, val_dataset)
        if _reached(config, run.global_iter):
            break
    return _finish(run)


def _setup(model: nn.Module, dataset: Dataset, config: TrainConfig, spec: Optional[dict]) -> _Run:
    """Devices, seeds, optimizer, schedule, sampler and the resumed position."""
    device = dist_utils.init_from_env(config.device)
    out = Path(config.output_dir)
    if dist_utils.is_main():
        out.mkdir(parents=True, exist_ok=True)
    dist_utils.barrier()
    rank, world = dist_utils.rank(), dist_utils.world_size()
    torch.manual_seed(config.seed + rank)
    random.seed(config.seed + rank)

    model.to(device).train()
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.learning_rate(world),
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    sampler = GroupedBatchSampler(
        [dataset.image_size(i) for i in range(len(dataset))],
        batch_size=config.batch_size,
        seed=config.seed,
        rank=rank,
        world_size=world,
        flip_prob=config.flip_prob,
    )
    iters_per_epoch = len(sampler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda it: lr_factor(
            it,
            iters_per_epoch=iters_per_epoch,
            steps=config.decay_epochs,
            warmup_iters=config.warmup_iters,
            warmup_ratio=config.warmup_ratio,
        ),
    )
    run = _Run(
        model=model,
        ddp=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=config.amp == "fp16"),
        sampler=sampler,
        config=config,
        device=device,
        amp_dtype=_AMP_DTYPES[config.amp],
        out=out,
        log=_JsonLog(out / "log.jsonl"),
        spec=spec,
    )
    resume_path = _resume_path(config)
    if resume_path is not None:
        _restore(run, resume_path)
    if dist_utils.is_main():  # a killed run may have logged past its checkpoint; a fresh run starts anew
        _truncate_log(out / "log.jsonl", global_iter=run.global_iter, epoch=run.epoch)
    if dist_utils.is_distributed():
        run.ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if dist_utils.is_main():
        (out / "config.json").write_text(
            json.dumps(
                {"train": asdict(config), "model": spec or {}, "world_size": world, "iters_per_epoch": iters_per_epoch},
                indent=1,
            )
        )
    return run


_AMP_DTYPES: dict[Optional[str], Optional[torch.dtype]] = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}


def _train_epoch(run: _Run, dataset: Dataset) -> bool:
    """Trains from ``run.batch`` to the end of the epoch; False when ``max_iters`` stopped it inside."""
    config, last = run.config, run.iters_per_epoch - 1
    run.sampler.set_epoch(run.epoch, run.batch)
    for index, images, targets, timing in _timed(_loader(dataset, run), run):
        lr = run.optimizer.param_groups[0]["lr"]  # this iteration's (the scheduler steps after it)
        losses = _step(run, *_to_device(images, targets, run.device), index=index)
        run.global_iter, run.batch = run.global_iter + 1, index + 1
        if run.bar is not None and not run.bar.disable:
            run.bar.set_postfix(loss=f"{float(sum(losses.values())):.4f}", lr=f"{lr:.3g}", refresh=False)
        if run.global_iter % config.log_every == 0 or run.global_iter == 1:
            _log_train(run, losses, index, timing, lr=lr)
        if index < last and (_due(config.checkpoint_every_iters, run.global_iter) or _reached(config, run.global_iter)):
            run.save_checkpoint()
        if index < last and _reached(config, run.global_iter):
            return False
    return True


def _end_epoch(run: _Run, val_dataset: Optional[Dataset]) -> None:
    """Checkpoint and weights of the finished epoch, and its evaluation when due."""
    run.epoch, run.batch = run.epoch + 1, 0
    run.save_checkpoint()
    run.weights = run.out / f"epoch_{run.epoch}.safetensors"
    if dist_utils.is_main():
        save_weights(run.model, run.weights, spec=run.spec)
    _remove_old_weights(run)
    config = run.config
    due = run.epoch == config.total_epochs or (config.eval_every and run.epoch % config.eval_every == 0)
    if val_dataset is not None and due:
        run.metrics = _evaluate(run, val_dataset)


def _truncate_log(path: Path, *, global_iter: int, epoch: int) -> None:
    """Keeps the records of ``log.jsonl`` up to the resumed position (all lines go on a fresh start)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by the kill
        if not isinstance(record, dict):
            continue
        train = record.get("mode") == "train"  # else a validation record, per epoch
        position = record.get("global_iter") if train else record.get("epoch")
        if isinstance(position, int) and position <= (global_iter if train else epoch):
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def _remove_old_weights(run: _Run) -> None:
    """Deletes ``epoch_<n>.safetensors`` beyond the newest ``keep_checkpoints`` (``max_keep_ckpts``)."""
    keep = run.config.keep_checkpoints
    if keep is None or not dist_utils.is_main():
        return
    for path in run.out.glob("epoch_*.safetensors"):
        match = re.fullmatch(r"epoch_(\d+)\.safetensors", path.name)
        if match and int(match.group(1)) <= run.epoch - keep:
            path.unlink(missing_ok=True)


def _finish(run: _Run) -> TrainResult:
    finished = run.epoch >= run.config.total_epochs
    if finished and dist_utils.is_main():
        run.weights = save_weights(run.model, run.out / "final.safetensors", spec=run.spec)
    dist_utils.barrier()
    return TrainResult(run.global_iter, run.epoch, finished, run.checkpoint, run.weights, run.metrics)


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


def _restore(run: _Run, path: Path) -> None:
    checkpoint = load_checkpoint(path)
    world = dist_utils.world_size()
    if checkpoint["world_size"] != world or len(checkpoint["rng"]) != world:
        raise ValueError(
            f"{path} was written by {checkpoint['world_size']} processes, this run has {world}; resume "
            "with the same number (each rank's data shard and RNG state depend on it)"
        )
    run.model.load_state_dict(checkpoint["model"], strict=True)
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"][dist_utils.rank()])
    run.epoch, run.batch, run.global_iter = checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["global_iter"]
    run.checkpoint = path


def _loader(dataset: Dataset, run: _Run) -> DataLoader:
    # Its own generator: creating an iterator must not draw from the global RNG, or a resumed
    # run would diverge from an uninterrupted one.
    generator = torch.Generator().manual_seed(run.config.seed * 1_000_003 + run.epoch)
    return DataLoader(
        dataset,
        batch_sampler=run.sampler,
        num_workers=run.config.num_workers,
        collate_fn=collate,
        pin_memory=run.device.type == "cuda",
        generator=generator,
    )


def _to_device(images: list[Tensor], targets: list[dict], device: torch.device) -> tuple[list[Tensor], list[dict]]:
    images = [i.to(device, non_blocking=True) for i in images]
    targets = [
        {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in t.items()} for t in targets
    ]
    return images, targets


def _timed(loader: DataLoader, run: _Run) -> Iterator[tuple[int, list, list, dict]]:
    """Yields (batch index, images, targets, timing) with a tqdm bar on rank 0."""
    config = run.config
    run.bar = bar = tqdm(
        total=run.iters_per_epoch,
        initial=run.batch,
        desc=f"epoch {run.epoch + 1}/{config.total_epochs}",
        disable=not (config.progress and dist_utils.is_main()),
        dynamic_ncols=True,
    )
    tick = time.perf_counter()
    for index, (images, targets) in enumerate(loader, start=run.batch):
        data_seconds = time.perf_counter() - tick
        yield index, images, targets, {"data_time": data_seconds, "start": tick}
        bar.update(1)
        tick = time.perf_counter()
    bar.close()
    run.bar = None


def _step(run: _Run, images: list[Tensor], targets: list[dict], *, index: int) -> dict[str, Tensor]:
    """One optimizer step; raises before stepping when the loss or the gradients are not finite on some rank."""
    with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
        losses = run.ddp(images, targets)
    loss = sum(losses.values())
    where = f"iteration {run.global_iter + 1} (epoch {run.epoch + 1}, batch {index + 1})"
    if not dist_utils.all_true(bool(torch.isfinite(loss.detach())), run.device):
        values = {k: float(v.detach()) for k, v in losses.items()}
        raise NonFiniteLossError(
            f"non-finite loss at {where} on some rank; this rank's losses: {values}. Training stopped without "
            f"taking the step. {_advice(run)}"
        )
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    params = [p for g in run.optimizer.param_groups for p in g["params"] if p.grad is not None]
    # With fp16 the grad scaler skips steps whose gradients overflow and lowers its scale: expected.
    if not run.scaler.is_enabled():
        finite = bool(torch.stack([torch.isfinite(p.grad).all() for p in params]).all()) if params else True
        if not dist_utils.all_true(finite, run.device):
            bad = [
                n for n, p in run.model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()
            ]
            raise NonFiniteGradientError(
                f"non-finite gradients at {where} with a finite loss ({float(loss.detach()):.4g}); on this rank in "
                f"{bad[:5]}{' ...' if len(bad) > 5 else ''}. Training stopped without taking the step. {_advice(run)}"
            )
    if run.config.grad_clip is not None:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(params, run.config.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return {k: v.detach() for k, v in losses.items()}


def _advice(run: _Run) -> str:
    last = run.checkpoint if run.checkpoint is not None else "none (none was written yet)"
    return (
        f"The last good checkpoint (finite weights) is {last}. Try a lower lr, a longer warmup, grad_clip, or check "
        "the annotations (degenerate boxes, labels out of range); then resume from it."
    )


def _log_train(run: _Run, losses: dict[str, Tensor], index: int, timing: dict, *, lr: float) -> None:
    names = sorted(losses)
    values = dist_utils.mean_across(torch.stack([losses[n].float() for n in names])).tolist()
    record = {
        "mode": "train",
        "epoch": run.epoch + 1,
        "iter": index + 1,
        "global_iter": run.global_iter,
        "lr": lr,
        "loss": sum(values),
        **dict(zip(names, values)),
        "time": time.perf_counter() - timing["start"],
        "data_time": timing["data_time"],
    }
    if run.device.type == "cuda":
        record["memory_mb"] = torch.cuda.max_memory_allocated(run.device) / 2**20
    run.log.write(record)


def _evaluate(run: _Run, dataset: Dataset) -> dict:
    config = run.config
    metrics = evaluate(
        run.model,
        dataset,
        results_file=run.out / f"results_epoch_{run.epoch}.json",
        device=run.device,
        num_workers=config.num_workers,
        progress=config.progress,
        autocast_dtype=run.amp_dtype,
    )
    run.log.write(
        {"mode": "val", "epoch": run.epoch, **{f"{t}_{k}": v for t, m in metrics.items() for k, v in m.items()}}
    )
    run.model.train()
    return metrics
