"""Pre-training and fine-tuning: the transfer-learning protocol of thesis 3.4.2-3.4.3 and 6.4.2.

Fine-tuning (:func:`finetune`) takes a source spec (``random:``, ``imagenet:``, ``checkpoint:``,
``pretrained:``; see :mod:`cfct.zoo`) and in-memory train / val / test :class:`~cfct.data.ImageSet` s, and
returns test-set predictions and metrics. The protocol knobs are the fields of :class:`FinetuneConfig`; the
thesis's two settings are :meth:`FinetuneConfig.thesis_ch3` and :meth:`FinetuneConfig.thesis_ch6`:

* 3.4.2 (Chapters 3-5): Adam, learning rate 1e-5, at most 200 epochs, early stopping after 30 epochs without
  a decrease of the validation loss, the model with the lowest validation loss kept; optionally the
  "freezing strategy": train the head with the pre-trained backbone frozen, then the whole network with the
  same settings (``freeze='freeze_then_full'``).
* 6.4.2 (Chapter 6): SGD (momentum, weight decay from a grid), at most 400 epochs, early stopping when the
  validation **AUC** has not improved for 50 epochs, yet the model with the lowest validation **loss** is kept
  -- hence ``monitor`` (what stops training) and ``select`` (which epoch's weights are kept) are separate.

Speed: batches are cut from the uint8 arrays by indexing and then converted, resized, augmented
(:class:`~cfct.data.BatchAugment`, one batched ``grid_sample``) and normalised as whole tensors on the
training device. There is no per-sample Python transform and no DataLoader: at 28 px per-sample transforms and
collation cost as much as the network itself (``bench/bench_finetune.py`` measures the difference).

Every run is cached in the results store by a hash of its full configuration and saves an epoch checkpoint
(model, optimiser, random-generator and early-stopping state) in its work folder, so a killed run resumes from
its last finished epoch and gives the same result as an uninterrupted one (on the CPU).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cfct import data, results, sources, stats, zoo
from cfct.config import PretrainSettings, Profile
from cfct.errors import ConfigError, IncompatibleError, unknown_choice
from cfct.sources import PRETRAIN_LR, pretrain_config

__all__ = [
    "FinetuneConfig", "FinetuneResult", "OPTIMIZERS", "MONITORS", "FREEZE_STRATEGIES", "DEVICES",
    "PRETRAIN_LR", "resolve_device", "accuracy", "predict", "finetune", "finetune_config",
    "pretrain", "pretrain_config", "SOURCE_SEED",
]

# Bump when a change of the training loop changes results: old cached runs are then not reused.
_CACHE_VERSION = 1
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
MONITORS: tuple[str, ...] = ("val_loss", "val_auc")
FREEZE_STRATEGIES: tuple[str, ...] = ("none", "freeze_then_full")
DEVICES: tuple[str, ...] = ("auto", "cuda", "mps", "cpu")
"""Adam learning rate of supervised pre-training from scratch (the usual Adam default; 1e-5, the thesis's
fine-tuning rate, is far too small to train a randomly initialised network in a few epochs)."""

_CHECKPOINT = "epoch.pt"
# Names that mark a chest X-ray target: 3.4.1 turns horizontal flips off for chest images (the heart is on
# one side, so a flipped radiograph is not a plausible one).
_CHEST_MARKERS = ("pneumoniamnist", "chestmnist", "cxr", "chest")


# ================================================================================ config
@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Settings of one fine-tune (every field enters the cache key).

    Parameters
    ----------
    optimizer : {'adam', 'sgd'}
        Adam (3.4.2) or SGD with ``momentum`` and ``weight_decay`` (6.4.2).
    lr, momentum, weight_decay : float
        Learning rate; SGD momentum (ignored by Adam); L2 weight decay (both optimisers).
    batch_size : int
    max_epochs : int
        Maximum epochs (per phase for ``freeze_then_full``).
    patience : int
        Early stopping: stop after this many epochs without improvement of ``monitor``.
    monitor : {'val_loss', 'val_auc'}
        Quantity early stopping watches (3.4.2: loss; 6.4.2: AUC).
    select : {'val_loss', 'val_auc'} or None
        Quantity whose best epoch's weights are restored at the end; None means the same as ``monitor``.
        Both thesis protocols keep the lowest validation loss.
    freeze : {'none', 'freeze_then_full'}
        ``'freeze_then_full'`` (3.4.2): phase 1 trains only the head with the backbone frozen (its
        BatchNorm statistics too, as Keras does for a non-trainable layer) until early stopping, the best
        weights of phase 1 are restored, then phase 2 trains the whole network with the same settings.
    augment : {'none', 'ch3', 'ch6'}
        :class:`cfct.data.BatchAugment` policy for training batches.
    hflip : bool or None
        Horizontal flips in the augmentation; None: on, except for chest X-ray targets (3.4.1).
    normalization : {'imagenet', 'half'} or None
        Input normalisation; None: the source model's own (6.4.2: ImageNet statistics for ImageNet
        sources, mean 0.5 / std 0.5 otherwise).
    seed : int
        Seeds initialisation of the head (and of ``random:`` backbones), shuffling, augmentation, dropout.
    device : {'auto', 'cuda', 'mps', 'cpu'}
    amp : bool
        Mixed precision on CUDA (bf16 where supported, else fp16 with gradient scaling); ignored elsewhere.
    channels_last : bool
        Channels-last memory format on CUDA; ignored elsewhere.
    cpu_bf16 : bool
        bf16 autocast on the CPU (off by default: CPU runs are exact fp32). On CPUs with native bf16
        (AVX512-BF16 / AMX) it cuts a ResNet18 step at 28 px by about a quarter; elsewhere it is slower.
    """

    optimizer: str = "adam"
    lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    max_epochs: int = 200
    patience: int = 30
    monitor: str = "val_loss"
    select: str | None = None
    freeze: str = "none"
    augment: str = "ch3"
    hflip: bool | None = None
    normalization: str | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    cpu_bf16: bool = False

    def __post_init__(self) -> None:
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("monitor", self.monitor, MONITORS)
        if self.select is not None:
            _choice("select", self.select, MONITORS)
        _choice("freeze strategy", self.freeze, FREEZE_STRATEGIES)
        _choice("augmentation policy", self.augment, data.AUGMENT_POLICIES)
        _choice("device", self.device, DEVICES)
        if self.normalization is not None:
            _choice("normalization", self.normalization, tuple(data.NORMALIZATION))
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                    or value < 0:
                raise ConfigError(f"FinetuneConfig.{name} must be a finite number >= 0; got {value!r}")
        if self.lr <= 0:
            raise ConfigError(f"FinetuneConfig.lr must be > 0; got {self.lr!r}")
        for name in ("batch_size", "max_epochs", "patience", "seed"):
            value = getattr(self, name)
            lowest = 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lowest:
                raise ConfigError(f"FinetuneConfig.{name} must be an int >= {lowest}; got {value!r}")
        if self.hflip is not None and not isinstance(self.hflip, bool):
            raise ConfigError(f"FinetuneConfig.hflip must be True, False or None; got {self.hflip!r}")

    @property
    def selected(self) -> str:
        """The quantity whose best epoch is restored (``select``, defaulting to ``monitor``)."""
        return self.select or self.monitor

    @classmethod
    def thesis_ch3(cls, **overrides: Any) -> FinetuneConfig:
        """3.4.2: Adam 1e-5, at most 200 epochs, patience 30 on validation loss, lowest loss kept, 3.4.1
        augmentation. Override any field, e.g. ``freeze='freeze_then_full'`` or a shorter ``max_epochs``."""
        base = dict(optimizer="adam", lr=1e-5, max_epochs=200, patience=30, monitor="val_loss",
                    select="val_loss", augment="ch3")
        return cls(**{**base, **overrides})

    @classmethod
    def thesis_ch6(cls, **overrides: Any) -> FinetuneConfig:
        """6.4.2: SGD (grid over lr, weight decay, momentum), at most 400 epochs, early stopping when the
        validation AUC has not improved for 50 epochs, the lowest validation loss kept, 6.4.2 augmentation."""
        base = dict(optimizer="sgd", lr=1e-2, momentum=0.9, weight_decay=0.0, max_epochs=400, patience=50,
                    monitor="val_auc", select="val_loss", augment="ch6")
        return cls(**{**base, **overrides})


def _choice(kind: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise unknown_choice(kind, value, choices)


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for ``name``: ``'auto'`` picks CUDA, then Apple MPS, then the CPU.

    Raises
    ------
    ConfigError
        Unknown name, or a device that is not available here.
    """
    _choice("device", name, DEVICES)
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ConfigError(f"device {name!r} is not available on this machine; use 'auto' or 'cpu'")
    return torch.device(name)


# ================================================================================ metrics
def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Fraction of correct predictions: arg-max class, or threshold 0.5 for 1-D binary / multi-label scores
    (multi-label: mean over all image-label pairs)."""
    y = np.asarray(labels)
    p = np.asarray(probs, dtype=np.float64)
    if len(y) != len(p):
        raise IncompatibleError(f"accuracy: {len(y)} labels but {len(p)} predictions")
    if y.ndim == 2:
        if p.shape != y.shape:
            raise IncompatibleError(f"accuracy: multi-label labels {y.shape} but predictions {p.shape}")
        return float(((p >= 0.5) == (y == 1)).mean())
    y = y.reshape(-1)
    if p.ndim == 1:
        return float(((p >= 0.5).astype(np.int64) == y).mean())
    return float((p.argmax(1) == y).mean())


# ================================================================================ batches
def _task_of(ds: data.ImageSet) -> str:
    return "multi-label" if ds.task == "multi-label" else "single"


def _loss(logits: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Softmax cross-entropy (binary = 2-logit softmax, multi-class, ordinal) or sigmoid BCE (multi-label)."""
    if task == "multi-label":
        return F.binary_cross_entropy_with_logits(logits.float(), y)
    return F.cross_entropy(logits.float(), y)


def train_step(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, task: str,
    amp: tuple[bool, torch.dtype], scaler: torch.amp.GradScaler | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step (forward under autocast, loss, backward, step); returns the detached loss and logits.

    The one step of every training loop here (fine-tuning, pre-training and the GPU benchmark's model-only
    bound), so a benchmark times exactly what a fine-tune runs.
    """
    with torch.autocast(x.device.type, dtype=amp[1], enabled=amp[0]):
        logits = model(x)
    loss = _loss(logits, y, task)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return loss.detach(), logits.detach()


def _probs(logits: torch.Tensor, task: str) -> torch.Tensor:
    return torch.sigmoid(logits.float()) if task == "multi-label" else torch.softmax(logits.float(), dim=1)


class _Batches:
    """Batches of one ImageSet: uint8 rows indexed, then float, resized, augmented and normalised on device.

    On CUDA the uint8 array is moved to the GPU once (when under 2 GiB), so a batch never crosses the bus.
    """

    def __init__(self, ds: data.ImageSet, *, device: torch.device, input_size: int, normalization: str,
                 channels_last: bool = False) -> None:
        images = torch.from_numpy(np.ascontiguousarray(ds.images))
        if device.type == "cuda" and images.numel() < 2**31:
            images = images.to(device)
        elif device.type == "cuda":
            images = images.pin_memory()
        self.images = images
        labels = np.asarray(ds.labels)
        if ds.task == "multi-label":
            self.labels = torch.as_tensor(labels, dtype=torch.float32)
        else:
            self.labels = torch.as_tensor(labels.reshape(-1), dtype=torch.int64)
        self.labels = self.labels.to(device)
        self.device, self.input_size, self.normalization = device, input_size, normalization
        self.channels_last = channels_last
        self.n = len(ds)

    def get(self, idx: torch.Tensor, augment: nn.Module | None = None,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        u8 = self.images[idx.to(self.images.device)].to(self.device, non_blocking=True)
        x = data.resize(data.to_tensor(u8), self.input_size)
        if augment is not None:
            x = augment(x, generator)
        x = data.normalize(x, self.normalization)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[idx.to(self.labels.device)]

    def sequential(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, self.n, batch_size):
            yield self.get(torch.arange(start, min(start + batch_size, self.n)))


def _autocast(device: torch.device, amp: bool, cpu_bf16: bool = False) -> tuple[bool, torch.dtype | None]:
    """Whether and in which dtype to autocast: CUDA with ``amp`` (bf16 where supported, else fp16), the CPU
    only with ``cpu_bf16``."""
    if device.type == "cpu" and cpu_bf16:
        return True, torch.bfloat16
    if not amp or device.type != "cuda":
        return False, None
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@torch.no_grad()
def _evaluate(model: nn.Module, batches: _Batches, task: str, batch_size: int,
              amp: tuple[bool, torch.dtype | None]) -> tuple[np.ndarray, float]:
    """Probabilities ``(N, C)`` and mean loss of ``model`` (eval mode) on every image of ``batches``."""
    was_training = model.training
    model.eval()
    probs, total = [], torch.zeros((), dtype=torch.float64, device=batches.device)
    for x, y in batches.sequential(batch_size):
        with torch.autocast(batches.device.type, dtype=amp[1], enabled=amp[0]):
            logits = model(x)
        total += _loss(logits, y, task).double() * len(y)
        probs.append(_probs(logits, task).cpu())
    model.train(was_training)
    out = torch.cat(probs).double().numpy()
    return out, float(total.item() / max(batches.n, 1))


def predict(model: nn.Module, ds: data.ImageSet, *, batch_size: int = 256,
            device: str | torch.device = "auto", normalization: str | None = None,
            input_size: int | None = None, amp: bool = False) -> np.ndarray:
    """Class probabilities of ``model`` on every image of ``ds``.

    Parameters
    ----------
    model : cfct.zoo.Classifier or nn.Module
    ds : ImageSet
    batch_size : int
    device : str or torch.device
        ``'auto'`` as :func:`resolve_device`; the model is moved there.
    normalization : str, optional
        Default: ``model.normalization`` (a Classifier's own), else ``'half'``.
    input_size : int, optional
        Resize images to this side first (default: their own size).
    amp : bool
        Autocast on CUDA.

    Returns
    -------
    np.ndarray
        ``(N, C)`` float64: softmax probabilities, or per-label sigmoids for multi-label data.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    norm = normalization or getattr(model, "normalization", None) or "half"
    batches = _Batches(ds, device=dev, input_size=input_size or ds.images.shape[1], normalization=norm)
    model.to(dev)
    probs, _ = _evaluate(model, batches, _task_of(ds), batch_size, _autocast(dev, amp))
    return probs


# ================================================================================ training loop
@dataclasses.dataclass
class _Best:
    """Best value so far of a monitored quantity; strict improvement (Keras ``min_delta=0``)."""

    mode: str  # 'min' | 'max'
    value: float = math.nan
    epoch: int = 0  # epoch (1-based, within the phase) of the best value; 0 = none yet
    bad: int = 0  # epochs since the last improvement

    def update(self, value: float, epoch: int) -> bool:
        lower = self.mode == "min"
        better = math.isfinite(value) and (
            not math.isfinite(self.value) or (value < self.value if lower else value > self.value))
        if better:
            self.value, self.epoch, self.bad = value, epoch, 0
        else:
            self.bad += 1
        return better


def _mode(quantity: str) -> str:
    return "min" if quantity.endswith("loss") else "max"


def _trainable(model: nn.Module, frozen_backbone: bool) -> list[nn.Parameter]:
    """Freeze (or unfreeze) the backbone of a Classifier; return the parameters to optimise.

    A frozen backbone gets no gradients and keeps its BatchNorm layers in inference mode (statistics fixed),
    as a non-trainable Keras layer (the thesis's framework) does; see ``Classifier.freeze_backbone``.
    """
    model.freeze_backbone(frozen_backbone)
    return list(model.head_parameters()) if frozen_backbone else list(model.parameters())


def _make_optimizer(params: list[nn.Parameter], name: str, lr: float, momentum: float, weight_decay: float,
                    device: torch.device) -> torch.optim.Optimizer:
    """Adam or SGD; the fused single-kernel implementation on CPU and CUDA (the default multi-tensor one
    spends ~50 ms per ResNet18 step on this 2-core CPU, a fifth of the step at 28 px; fused: ~10 ms)."""
    fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **fused)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **fused)


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict`` of a plain tensor dict (a checkpoint file, a best-epoch copy).

    Some torchvision modules (MNASNet) check the module versions a ``state_dict()`` carries in ``_metadata``;
    a plain dict has none, so they are taken from the model itself.
    """
    target = collections.OrderedDict(state)
    target._metadata = getattr(model.state_dict(), "_metadata", None)  # type: ignore[attr-defined]
    model.load_state_dict(target)


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclasses.dataclass
class _Plan:
    """What :func:`_fit` does: settings shared by pre-training and fine-tuning."""

    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int | None  # None: no early stopping (pre-training)
    monitor: str
    select: str
    phases: tuple[str, ...]  # 'head' and/or 'full'
    seed: int
    amp: tuple[bool, torch.dtype | None]
    fp16_scaler: bool
    desc: str
    progress: bool


def _fit(model: nn.Module, train: _Batches, val: _Batches | None, task: str, augment: nn.Module | None,
         plan: _Plan, workdir: Path, on_epoch_end: Callable[[dict], None] | None) -> dict[str, Any]:
    """Train ``model`` in place following ``plan``; resumable from ``workdir/epoch.pt``.

    Returns the training record: history rows, best epochs, timing. The model ends with the selected weights.
    """
    device = train.device
    ckpt_path = workdir / _CHECKPOINT
    g_shuffle = torch.Generator().manual_seed(plan.seed)
    g_augment = torch.Generator().manual_seed(plan.seed + 1_000_003)
    torch.manual_seed(plan.seed + 2_000_006)  # dropout; the caller forked the global RNG
    state: dict[str, Any] = {"phase": 0, "epoch": 0, "history": [], "train_seconds": 0.0, "train_images": 0,
                             "monitor": None, "select": None, "best_file": None, "phase_best": [],
                             "diverged": False}
    resumed = None
    if ckpt_path.exists():
        try:
            resumed = torch.load(ckpt_path, map_location=device, weights_only=True)
        except Exception as exc:  # a checkpoint from another torch version, or damaged: start over
            warnings.warn(f"ignoring unreadable checkpoint {ckpt_path}: {exc}", stacklevel=2)
    if resumed is not None:
        _load_state(model, resumed["model"])
        g_shuffle.set_state(resumed["rng"]["shuffle"])
        g_augment.set_state(resumed["rng"]["augment"])
        torch.set_rng_state(resumed["rng"]["torch"])
        if device.type == "cuda" and resumed["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(resumed["rng"]["cuda"], device)
        state.update({k: resumed[k] for k in state})

    while state["phase"] < len(plan.phases):
        phase = plan.phases[state["phase"]]
        frozen = phase == "head"
        params = _trainable(model, frozen)
        opt = _make_optimizer(params, plan.optimizer, plan.lr, plan.momentum, plan.weight_decay, device)
        scaler = torch.amp.GradScaler("cuda") if plan.fp16_scaler else None
        mon = _Best(**state["monitor"]) if state["monitor"] else _Best(_mode(plan.monitor))
        sel = _Best(**state["select"]) if state["select"] else _Best(_mode(plan.select))
        best_state: dict[str, torch.Tensor] | None = None
        if resumed is not None and resumed["phase"] == state["phase"]:
            if resumed.get("optimizer"):
                opt.load_state_dict(resumed["optimizer"])
            if scaler is not None and resumed.get("scaler"):
                scaler.load_state_dict(resumed["scaler"])
            if state["best_file"]:
                best_state = torch.load(workdir / state["best_file"], map_location=device, weights_only=True)
        resumed = None
        stop = state["diverged"] or (plan.patience is not None and mon.bad >= plan.patience)
        bar = tqdm(total=plan.max_epochs, initial=state["epoch"], desc=f"{plan.desc} [{phase}]", unit="epoch",
                   disable=not plan.progress, leave=False, dynamic_ncols=True)
        n = train.n
        while not stop and state["epoch"] < plan.max_epochs:
            model.train()
            if augment is not None:
                augment.train()
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=g_shuffle)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.float64, device=device)
            seen = 0
            for start in range(0, n, plan.batch_size):
                idx = perm[start:start + plan.batch_size]
                if len(idx) < 2 <= n:  # BatchNorm cannot train on one image; drop a trailing singleton
                    continue
                x, y = train.get(idx, augment, g_augment)
                loss, logits = train_step(model, opt, x, y, task, plan.amp, scaler)
                loss_sum += loss.double() * len(idx)
                if task != "multi-label":
                    correct += (logits.argmax(1) == y).sum().double()
                seen += len(idx)
            train_loss = float(loss_sum.item() / max(seen, 1))
            state["train_seconds"] += time.perf_counter() - t0
            state["train_images"] += seen
            state["epoch"] += 1
            row: dict[str, Any] = {"phase": phase, "epoch": state["epoch"], "train_loss": train_loss}
            if task != "multi-label":
                row["train_acc"] = float(correct.item() / max(seen, 1))
            if not math.isfinite(train_loss):
                state["diverged"] = True  # a diverged run (e.g. lr 1.0 in the 6.4.2 grid) cannot recover
            if val is not None:
                probs, val_loss = _evaluate(model, val, task, plan.batch_size, plan.amp)
                labels = val.labels.cpu().numpy()
                finite = np.isfinite(probs).all()
                row["val_loss"] = val_loss
                row["val_auc"] = stats.roc_auc(labels, probs) if finite else math.nan
                row["val_acc"] = accuracy(labels, probs) if finite else math.nan
                mon.update(row[plan.monitor], state["epoch"])
                if sel.update(row[plan.select], state["epoch"]):
                    best_state = _state_copy(model)
                    name = f"best-{state['phase']}-{state['epoch']}.pt"
                    _save_atomic(best_state, workdir / name)
                    old, state["best_file"] = state["best_file"], name
                    if old and old != name:
                        state["_old_best"] = old
                stop = state["diverged"] or (plan.patience is not None and mon.bad >= plan.patience)
            else:
                stop = state["diverged"]
            row["seconds"] = time.perf_counter() - t0
            state["history"].append(row)
            state["monitor"], state["select"] = dataclasses.asdict(mon), dataclasses.asdict(sel)
            old_best = state.pop("_old_best", None)
            _save_atomic(_checkpoint(model, opt, scaler, state, g_shuffle, g_augment, device), ckpt_path)
            if old_best:  # only now is the checkpoint pointing at the new best file
                (workdir / old_best).unlink(missing_ok=True)
            bar.update(1)
            bar.set_postfix({k: f"{row[k]:.4g}" for k in ("train_loss", "val_loss", "val_auc") if k in row})
            if on_epoch_end is not None:
                on_epoch_end({**row, "global_epoch": len(state["history"])})
        bar.close()
        # End of phase: restore the selected epoch's weights (the next phase starts from them).
        if best_state is not None:
            _load_state(model, best_state)
        state["phase_best"].append(sel.epoch)
        state.update(phase=state["phase"] + 1, epoch=0, monitor=None, select=None)
        best_file, state["best_file"] = state["best_file"], None
        state["diverged"] = False if state["phase"] < len(plan.phases) else state["diverged"]
        _save_atomic(_checkpoint(model, None, None, state, g_shuffle, g_augment, device), ckpt_path)
        if best_file:
            (workdir / best_file).unlink(missing_ok=True)
    model.freeze_backbone(False)
    return state


def _checkpoint(model: nn.Module, opt: torch.optim.Optimizer | None, scaler: Any, state: dict[str, Any],
                g_shuffle: torch.Generator, g_augment: torch.Generator,
                device: torch.device) -> dict[str, Any]:
    """Everything needed to continue training exactly where it stopped (loaded with weights_only=True)."""
    rng = {"shuffle": g_shuffle.get_state(), "augment": g_augment.get_state(), "torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    return {
        **{k: v for k, v in state.items() if not k.startswith("_")},
        "model": model.state_dict(),
        "optimizer": opt.state_dict() if opt is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng,
    }


def _cleanup(workdir: Path) -> None:
    """Remove the resume files once a run is complete (they are large and no longer needed)."""
    for f in [workdir / _CHECKPOINT, *workdir.glob("best-*.pt"), *workdir.glob("*.pt.tmp")]:
        f.unlink(missing_ok=True)


def _forked_rng(device: torch.device):
    """Fork the global torch RNG so training does not disturb the caller's random state."""
    devices = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


# ================================================================================ zoo glue
# A `pretrained:` source is one model shared by every fine-tune (folds, seeds, strategies), as the thesis's
# downloaded ImageNet / RadImageNet weights were; its pre-training seed is therefore fixed.
SOURCE_SEED = 0


def _pretrain_kwargs(source: str) -> dict[str, Any] | None:
    return {"seed": SOURCE_SEED} if sources.parse_spec(source).kind == "pretrained" else None


def load_source(spec: str, num_classes: int | None = None, *, input_size: int = 224,
                store: results.Store | None = None, pretrain: PretrainSettings | Profile | str | None = None,
                seed: int | None = 0, pretrain_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """:func:`cfct.sources.create`, pre-training a ``pretrained:`` source first (cached) when needed.

    Parameters are those of :func:`cfct.sources.create`; ``pretrain`` and ``pretrain_kwargs`` set the
    pre-training (:func:`cfct.sources.pretrain_settings`).
    """
    src = sources.parse_spec(spec)
    if src.kind == "pretrained":
        kwargs = sources.pretrain_settings(src.arg, pretrain, **{"seed": seed or 0, **dict(pretrain_kwargs or {})})
        _pretrain_source(src.arch, src.arg, store=store, **kwargs)
    return sources.create(src, num_classes, input_size=input_size, store=store, pretrain=pretrain, seed=seed,
                          pretrain_kwargs=pretrain_kwargs)


def _is_chest(name: str) -> bool:
    lowered = name.lower()
    return any(marker in lowered for marker in _CHEST_MARKERS)


# ================================================================================ fine-tuning
@dataclasses.dataclass
class FinetuneResult:
    """Outcome of :func:`finetune`.

    Attributes
    ----------
    metrics : dict
        ``test_auc, test_acc, test_loss, val_auc, val_loss, val_acc`` (validation values at the selected
        epoch), ``best_epoch`` (1-based over all epochs of all phases), ``epochs``, ``stopped_early``,
        ``diverged``, ``seconds``, ``train_seconds``, ``images_per_s`` (training throughput), ``device``,
        ``normalization``, ``input_size``, ``n_train``, ``n_val``, ``n_test``.
    test_probs : np.ndarray
        ``(N, C)`` test-set probabilities of the selected model.
    test_labels : np.ndarray
    run : cfct.results.Run
        The stored run (``model.safetensors``, ``history.csv``, ``val_probs.npy``).
    """

    metrics: dict[str, Any]
    test_probs: np.ndarray
    test_labels: np.ndarray
    run: results.Run

    @classmethod
    def from_run(cls, run: results.Run) -> FinetuneResult:
        return cls(metrics=dict(run.metrics), test_probs=run.array("test_probs"),
                   test_labels=run.array("test_labels"), run=run)

    @property
    def history(self) -> pd.DataFrame:
        """One row per epoch: phase, epoch, train_loss, train_acc, val_loss, val_auc, val_acc, seconds."""
        return pd.read_csv(self.run.file("history.csv"))

    def load_model(self) -> nn.Module:
        """The fine-tuned Classifier with the selected weights (CPU, eval mode, its normalisation set)."""
        arch = sources.parse_spec(self.run.config["source"]["spec"]).arch
        file = self.run.file("model.safetensors")
        return sources.create(f"checkpoint:{arch}:{file}", None, input_size=self.run.config["input_size"]).eval()


def _check_splits(train: data.ImageSet, val: data.ImageSet, test: data.ImageSet) -> None:
    for name, ds in (("train", train), ("val", val), ("test", test)):
        if not isinstance(ds, data.ImageSet):
            raise ConfigError(f"finetune: {name} must be a cfct.data.ImageSet; got {type(ds).__name__}")
        if ds.task != train.task or ds.n_classes != train.n_classes:
            raise IncompatibleError(
                f"finetune: the {name} split {ds.name!r} ({ds.task}, {ds.n_classes} classes) does not match "
                f"the train split {train.name!r} ({train.task}, {train.n_classes} classes)")
        if ds.task == "multi-label":
            ok = ((ds.labels.sum(0) > 0) & (ds.labels.sum(0) < len(ds))).any()
            counts = ds.labels.sum(0).tolist()
        else:
            present = np.unique(ds.labels)
            ok = len(present) >= 2
            counts = np.bincount(ds.labels.reshape(-1), minlength=ds.n_classes).tolist()
        if not ok:
            raise IncompatibleError(
                f"finetune: the {name} split {ds.name!r} holds a single class (images per class: {counts}); "
                "every split needs at least two classes to train and to measure AUC")


def finetune_config(source: str, train: data.ImageSet, val: data.ImageSet, test: data.ImageSet,
                    cfg: FinetuneConfig, *, input_size: int | None = None,
                    pretrain: PretrainSettings | Profile | str | None = None) -> dict[str, Any]:
    """The cache key of a fine-tune: source (with its pre-training config), data fingerprints, every
    :class:`FinetuneConfig` field."""
    return {
        "version": _CACHE_VERSION,
        "source": sources.source_config(source, pretrain=pretrain, seed=cfg.seed,
                                       pretrain_kwargs=_pretrain_kwargs(source)),
        "train": train.fingerprint(), "val": val.fingerprint(), "test": test.fingerprint(),
        "data": {"train": train.name, "val": val.name, "test": test.name},
        "task": train.task, "n_classes": train.n_classes,
        "input_size": int(input_size or train.images.shape[1]),
        "finetune": dataclasses.asdict(cfg),
    }


def finetune(source: str, train: data.ImageSet, val: data.ImageSet, test: data.ImageSet,
             cfg: FinetuneConfig | None = None, *, store: results.Store | None = None,
             input_size: int | None = None, progress: bool = True,
             pretrain: PretrainSettings | Profile | str | None = None,
             on_epoch_end: Callable[[dict], None] | None = None) -> FinetuneResult:
    """Fine-tune a source model on a target and evaluate it on the test set (3.4.2-3.4.3, 6.4.2).

    Parameters
    ----------
    source : str
        Source spec (:func:`cfct.sources.parse_spec`): ``random:<arch>``, ``imagenet:<arch>``,
        ``checkpoint:<arch>:<path>``, ``pretrained:<arch>:<dataset>``.
    train, val, test : ImageSet
        Target splits; each must hold at least two classes.
    cfg : FinetuneConfig, optional
        Default :meth:`FinetuneConfig` (the 3.4.2 protocol).
    store : cfct.results.Store, optional
        Results store (default: ``$CFCT_DATA/results``).
    input_size : int, optional
        Side the images are resized to (default: the train images' own).
    progress : bool
        tqdm bar per phase with live loss / AUC.
    pretrain : cfct.config.PretrainSettings, optional
        Pre-training settings of ``pretrained:`` sources (a profile or its name gives its own,
        ``profile.pretrain``; None: ``$CFCT_PROFILE`` or quick).
    on_epoch_end : callable, optional
        Called with the epoch's history row after its checkpoint is written (not part of the cache key).

    Returns
    -------
    FinetuneResult

    Raises
    ------
    ConfigError, IncompatibleError
        Unknown source or settings; splits that do not match or hold a single class.
    """
    cfg = cfg if cfg is not None else FinetuneConfig()
    if not isinstance(cfg, FinetuneConfig):
        raise ConfigError(f"finetune: cfg must be a FinetuneConfig; got {type(cfg).__name__}")
    _check_splits(train, val, test)
    store = store if store is not None else results.default_store()
    key = finetune_config(source, train, val, test, cfg, input_size=input_size, pretrain=pretrain)
    size = key["input_size"]

    def compute(workdir: Path) -> dict[str, Any]:
        t_start = time.perf_counter()
        device = resolve_device(cfg.device)
        with _forked_rng(device):
            model = load_source(source, train.n_classes, input_size=size, store=store, pretrain=pretrain,
                                  seed=cfg.seed, pretrain_kwargs=_pretrain_kwargs(source))
            norm = cfg.normalization or getattr(model, "normalization", None) or "half"
            channels_last = cfg.channels_last and device.type == "cuda"
            model.to(device)
            if channels_last:
                model.to(memory_format=torch.channels_last)
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = True
            amp = _autocast(device, cfg.amp, cfg.cpu_bf16)
            hflip = cfg.hflip if cfg.hflip is not None else not _is_chest(train.name)
            augment = (data.BatchAugment(cfg.augment, hflip=hflip, seed=cfg.seed)
                       if cfg.augment != "none" else None)
            task = _task_of(train)
            batches = {name: _Batches(ds, device=device, input_size=size, normalization=norm,
                                      channels_last=channels_last)
                       for name, ds in (("train", train), ("val", val), ("test", test))}
            plan = _Plan(optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, max_epochs=cfg.max_epochs,
                         patience=cfg.patience, monitor=cfg.monitor, select=cfg.selected,
                         phases=("head", "full") if cfg.freeze == "freeze_then_full" else ("full",),
                         seed=cfg.seed, amp=amp, fp16_scaler=amp[0] and amp[1] == torch.float16,
                         desc=f"finetune {source} -> {train.name}", progress=progress)
            record = _fit(model, batches["train"], batches["val"], task, augment, plan, workdir, on_epoch_end)
            val_probs, val_loss = _evaluate(model, batches["val"], task, cfg.batch_size, amp)
            test_probs, test_loss = _evaluate(model, batches["test"], task, cfg.batch_size, amp)
        val_labels, test_labels = np.asarray(val.labels), np.asarray(test.labels)
        if task != "multi-label":
            val_labels, test_labels = val_labels.reshape(-1), test_labels.reshape(-1)

        def safe(fn: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray, p: np.ndarray) -> float:
            return fn(y, p) if np.isfinite(p).all() else math.nan

        history = pd.DataFrame(record["history"])
        offsets = np.cumsum([0] + [int((history["phase"] == ph).sum()) for ph in plan.phases])
        best_epoch = int(offsets[-2] + record["phase_best"][-1]) if record["phase_best"][-1] else len(history)
        results.save_arrays(workdir, test_probs=test_probs, test_labels=test_labels,
                            val_probs=val_probs)
        history.to_csv(workdir / "history.csv", index=False)
        model.cpu()
        model.normalization = norm
        zoo.save_checkpoint(model.to(memory_format=torch.contiguous_format), workdir / "model.safetensors",
                               {"source": source, "target": train.name})
        _cleanup(workdir)
        n_epochs = len(history)
        return {
            "test_auc": safe(stats.roc_auc, test_labels, test_probs),
            "test_acc": safe(accuracy, test_labels, test_probs),
            "test_loss": test_loss, "val_auc": safe(stats.roc_auc, val_labels, val_probs),
            "val_loss": val_loss, "val_acc": safe(accuracy, val_labels, val_probs),
            "best_epoch": best_epoch, "epochs": n_epochs,
            "stopped_early": bool(n_epochs < cfg.max_epochs * len(plan.phases)),
            "diverged": bool(record["diverged"]),
            "seconds": time.perf_counter() - t_start, "train_seconds": record["train_seconds"],
            "images_per_s": record["train_images"] / max(record["train_seconds"], 1e-9),
            "device": str(device), "normalization": norm, "input_size": size, "hflip": hflip,
            "n_train": len(train), "n_val": len(val), "n_test": len(test),
        }

    run = store.cached("finetune", key, compute)
    return FinetuneResult.from_run(run)


# ================================================================================ pre-training
def pretrain(arch: str, dataset: str, *, image_size: int, epochs: int, max_images: int | None,
             batch_size: int, lr: float = PRETRAIN_LR, seed: int = 0, store: results.Store | None = None,
             augment: str = "none", progress: bool = True, device: str = "auto") -> results.Run:
    """Supervised pre-training of a randomly initialised ``arch`` on ``dataset`` (a source of Chapters 3-6).

    The network (:func:`cfct.sources.create` of ``random:<arch>`` with one output per class) is trained with Adam
    and softmax cross-entropy for a fixed number of epochs on the train split of
    :func:`cfct.data.load_dataset`, inputs normalised with mean 0.5 / std 0.5 (6.4.2's rule for non-ImageNet
    sources). No validation split and no early stopping: the source only has to provide features.

    Parameters
    ----------
    arch : str
        Architecture (:func:`cfct.zoo.architectures`).
    dataset : str
        Dataset spec: ``'cifar10'``, ``'medmnist:<flag>'``, ``'medmnist-lto:<target>'``,
        ``'medical-lto:<target>'`` (every other local medical set, :func:`cfct.data.load_dataset`),
        ``'csv:...'``, ``'imagefolder:...'``.
    image_size : int
    epochs : int
    max_images : int or None
        Seeded stratified subsample of at most this many training images (None: all).
    batch_size : int
    lr : float
        Adam learning rate (default :data:`PRETRAIN_LR` = 1e-3).
    seed : int
    store : cfct.results.Store, optional
    augment : {'none', 'ch3', 'ch6'}
        Augmentation of training batches (default none: a few epochs on a subset hardly overfit).
    progress : bool
    device : str

    Returns
    -------
    cfct.results.Run
        With file ``model.safetensors`` (metadata ``num_classes``, ``normalization='half'``, ``arch``,
        ``dataset``), ``history.csv`` and metrics ``train_loss``, ``train_acc``, ``n_images``, ``n_classes``.
    """
    if arch not in zoo.architectures():
        raise unknown_choice("architecture", arch, zoo.architectures())
    _choice("augmentation policy", augment, data.AUGMENT_POLICIES)
    for name, value in (("image_size", image_size), ("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ConfigError(f"pretrain: {name} must be a positive int; got {value!r}")
    if max_images is not None and (not isinstance(max_images, int | np.integer) or max_images < 2):
        raise ConfigError(f"pretrain: max_images must be None or an int >= 2; got {max_images!r}")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"pretrain: lr must be a positive number; got {lr!r}")
    store = store if store is not None else results.default_store()
    key = pretrain_config(arch, dataset, image_size=image_size, epochs=epochs, max_images=max_images,
                          batch_size=batch_size, lr=lr, seed=seed, augment=augment)

    def compute(workdir: Path) -> dict[str, Any]:
        t_start = time.perf_counter()
        ds = data.load_dataset(dataset, image_size, split="train", seed=seed, max_images=max_images)
        if ds.n_classes < 2:
            raise IncompatibleError(f"pretrain: {ds.name!r} holds a single class; a classifier needs two")
        dev = resolve_device(device)
        with _forked_rng(dev):
            model = sources.create(f"random:{arch}", ds.n_classes, input_size=image_size, seed=seed)
            model.to(dev)
            amp = _autocast(dev, True)
            if dev.type == "cuda":
                model.to(memory_format=torch.channels_last)
            batches = _Batches(ds, device=dev, input_size=image_size, normalization="half",
                               channels_last=dev.type == "cuda")
            aug = (data.BatchAugment(augment, hflip=not _is_chest(ds.name), seed=seed)
                   if augment != "none" else None)
            plan = _Plan(optimizer="adam", lr=float(lr), momentum=0.0, weight_decay=0.0,
                         batch_size=batch_size, max_epochs=epochs, patience=None, monitor="val_loss",
                         select="val_loss", phases=("full",), seed=seed, amp=amp,
                         fp16_scaler=amp[0] and amp[1] == torch.float16,
                         desc=f"pretrain {arch} on {dataset}", progress=progress)
            record = _fit(model, batches, None, _task_of(ds), aug, plan, workdir, None)
        model.cpu()
        model.normalization = "half"
        history = pd.DataFrame(record["history"])
        history.to_csv(workdir / "history.csv", index=False)
        zoo.save_checkpoint(model.to(memory_format=torch.contiguous_format), workdir / "model.safetensors",
                            {"dataset": dataset, "class_names": list(ds.class_names)})
        _cleanup(workdir)
        last = record["history"][-1]
        return {"train_loss": last["train_loss"], "train_acc": last.get("train_acc", math.nan),
                "epochs": len(history), "n_images": len(ds), "n_classes": ds.n_classes,
                "class_names": list(ds.class_names), "seconds": time.perf_counter() - t_start,
                "images_per_s": record["train_images"] / max(record["train_seconds"], 1e-9),
                "device": str(dev), "diverged": bool(record["diverged"])}

    return store.cached("pretrain", key, compute)


#: :func:`pretrain` under another name for :func:`load_source`, whose ``pretrain`` argument (the settings)
#: shadows it.
_pretrain_source = pretrain
