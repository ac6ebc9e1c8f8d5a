"""Lightning callbacks that monitor pretraining without (or with few) labels.

* :class:`RankMeMonitor` — RankMe (Garrido et al. 2023, arXiv:2210.02885) of the embeddings
  of recent training batches, logged as ``monitor/rankme`` every ``every_n_steps``.
* :class:`KNNMonitor` — weighted kNN top-1 accuracy (Wu et al. 2018, arXiv:1805.01978; DINO's
  protocol, arXiv:2104.14294) of a labelled query set against a labelled bank, logged as
  ``monitor/knn_top1`` every ``every_n_epochs`` (optionally a linear probe, MAE-style).
* :class:`~domainfm.tasks.monitors.preview.ReconstructionPreview` (in ``preview.py``) — a PNG
  grid ``input | masked | reconstruction`` for masked objectives.

What the LightningModule must provide (see :class:`SupportsEmbed` and
:class:`SupportsReconstructPreview`)::

    embed(batch: Mapping[str, Any]) -> Tensor                      # (B, D) pooled embeddings
    reconstruct_preview(batch: Mapping[str, Any]) -> dict[str, Tensor]
        # {"input", "masked", "reconstruction"}: each (B, C, *spatial), 1-3 spatial dims,
        # float, in the input's intensity units

The callbacks call them under ``torch.no_grad()``, in eval mode (every submodule's
``training`` flag is restored afterwards), inside the precision plugin's forward context
(autocast as in ``training_step``), and with the CPU and current CUDA random-number
generators forked, so monitoring neither changes the training run's random stream nor
back-propagates. Scalars go straight to every logger of ``trainer.loggers`` at
``step=trainer.global_step`` (so they are never dropped by ``log_every_n_steps``) and into
``trainer.callback_metrics``.

Example::

    >>> trainer = L.Trainer(callbacks=[
    ...     RankMeMonitor(every_n_steps=50, max_samples=2048),
    ...     KNNMonitor(bank_loader, query_loader, num_classes=10, every_n_epochs=1),
    ...     ReconstructionPreview(every_n_steps=100, max_images=4),
    ... ])
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import Tensor, nn

from domainfm.tasks.monitors.knn import KNNClassifier, LinearProbe
from domainfm.tasks.monitors.rankme import RankMe

__all__ = [
    "EveryNSteps",
    "KNNMonitor",
    "RankMeMonitor",
    "SupportsEmbed",
    "SupportsReconstructPreview",
]


@runtime_checkable
class SupportsEmbed(Protocol):
    """A module whose ``embed(batch)`` returns pooled embeddings ``(B, D)`` of the full input.

    ``batch`` is a training batch, or ``{"input": x}`` for :class:`KNNMonitor`; only
    ``batch["input"]`` (unmasked) should be used.
    """

    def embed(self, batch: Mapping[str, Any]) -> Tensor: ...


@runtime_checkable
class SupportsReconstructPreview(Protocol):
    """A module whose ``reconstruct_preview(batch)`` returns the tensors of a preview.

    The returned dict holds ``"input"``, ``"masked"`` (the input as the encoder sees it, hidden
    patches filled, e.g. with 0) and ``"reconstruction"`` (the prediction, de-normalized to the
    input's units), each ``(B, C, *spatial)`` with 1 to 3 spatial dims and the same shape.
    """

    def reconstruct_preview(self, batch: Mapping[str, Any]) -> dict[str, Tensor]: ...


def _require(pl_module: nn.Module, name: str, caller: str) -> Callable[..., Any]:
    method = getattr(pl_module, name, None)
    if not callable(method):
        raise TypeError(
            f"{caller} needs the LightningModule to define {name}(batch); "
            f"{type(pl_module).__name__} has no such method"
        )
    return method


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode inside, each submodule's own ``training`` flag restored afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def _isolated_rng(device: torch.device) -> Iterator[None]:
    """Fork the CPU generator (and the CUDA one of ``device``) for the duration."""
    if device.type != "cuda":
        cuda: list[int] = []
    else:
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda):
        yield


@contextlib.contextmanager
def _inference(trainer: L.Trainer, pl_module: L.LightningModule) -> Iterator[None]:
    with (
        _isolated_rng(pl_module.device),
        torch.no_grad(),
        _eval_mode(pl_module),
        trainer.precision_plugin.forward_context(),
    ):
        yield


def _as_embeddings(z: Any) -> Tensor:
    if not isinstance(z, Tensor) or z.ndim != 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"embed(batch) must return a (B, D) tensor, got {shape}")
    return z.detach().float()


def _log_scalars(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """Write to every logger at ``trainer.global_step`` and expose in ``callback_metrics``."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
    callback_metrics = trainer.callback_metrics
    for name, value in metrics.items():
        callback_metrics[name] = torch.tensor(value)


class EveryNSteps(L.Callback):
    """Base of the monitors that act every ``every_n_steps`` optimizer steps.

    :meth:`on_train_batch_end` hands every training batch to :meth:`observe`, then calls
    :meth:`act` at each positive multiple of ``every_n_steps`` (never at step 0) when
    :meth:`ready`, once per optimizer step (under gradient accumulation the batches of one
    step act once).
    """

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = every_n_steps
        self._last_step = -1

    def observe(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, step: int
    ) -> None:
        """Look at a training batch, every step (default: nothing)."""

    def ready(self) -> bool:
        """Whether there is something to act on (default: always)."""
        return True

    def act(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, step: int) -> None:
        """What the monitor does at an ``every_n_steps`` step."""
        raise NotImplementedError

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: STEP_OUTPUT,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        self.observe(trainer, pl_module, batch, step)
        if step == 0 or step % self.every_n_steps or step == self._last_step or not self.ready():
            return
        self._last_step = step
        self.act(trainer, pl_module, batch, step)


class RankMeMonitor(EveryNSteps):
    """Log the RankMe of recent training-batch embeddings as ``monitor/rankme``.

    At ``on_train_batch_end`` the batch is embedded with ``pl_module.embed(batch)`` (eval mode,
    no grad) and accumulated in a :class:`~domainfm.tasks.monitors.rankme.RankMe` metric until
    ``max_samples`` rows are held; at every ``every_n_steps``-th optimizer step the RankMe of
    the accumulated rows is computed (gathered over DDP processes), logged, and the metric is
    reset. The embedding forward costs about an eval forward per collected batch; limit it
    with ``collect_steps`` (only the last ``collect_steps`` optimizer steps before each
    computation are embedded, i.e. the most recent weights). RankMe is bounded by the number
    of rows, so keep ``max_samples`` (times processes) at or above the embedding width.

    Args:
        every_n_steps: compute and log every this many optimizer steps.
        max_samples: rows kept per process and window.
        collect_steps: embed only during the last this many steps of each window
            (``None``: from the start of the window until ``max_samples`` rows are held).
        name: the logged metric's name.

    Attributes:
        last_value: the last logged RankMe, ``None`` before the first.
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        max_samples: int = 2048,
        *,
        collect_steps: int | None = None,
        name: str = "monitor/rankme",
    ) -> None:
        if every_n_steps < 1 or max_samples < 1:
            raise ValueError(
                f"every_n_steps and max_samples must be >= 1, got {every_n_steps}, {max_samples}"
            )
        if collect_steps is not None and collect_steps < 1:
            raise ValueError(f"collect_steps must be >= 1 or None, got {collect_steps}")
        super().__init__(every_n_steps)
        self.max_samples = max_samples
        self.collect_steps = collect_steps
        self.name = name
        self.last_value: float | None = None
        self._metric = RankMe(max_samples=max_samples)
        self._warned_few_rows = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._metric = self._metric.to(pl_module.device)
        self._metric.reset()
        self._last_step = -1

    def observe(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, step: int
    ) -> None:
        """Embed the batch when it falls in the collecting window and the metric has room."""
        steps_left = -step % self.every_n_steps  # optimizer steps until the next computation
        collect = self.collect_steps is None or steps_left < self.collect_steps
        if collect and not self._metric.is_full:
            embed = _require(pl_module, "embed", type(self).__name__)
            with _inference(trainer, pl_module):
                z = _as_embeddings(embed(batch))
            self._metric.update(z)

    def ready(self) -> bool:
        return self._metric.num_samples > 0

    def act(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, step: int) -> None:
        """Compute, log and reset the RankMe of the rows held."""
        rows, width = self._metric.num_samples, self._metric.embeddings[0].shape[1]
        if rows < width and not self._warned_few_rows:
            self._warned_few_rows = True
            rank_zero_warn(
                f"RankMeMonitor: {rows} embeddings of width {width} on this process; RankMe is "
                "bounded by the number of rows, raise max_samples or every_n_steps"
            )
        value = float(self._metric.compute())
        self._metric.reset()
        self.last_value = value
        _log_scalars(trainer, {self.name: value})


class KNNMonitor(L.Callback):
    """Log weighted kNN top-1 accuracy on labelled data as ``monitor/knn_top1``.

    Every ``every_n_epochs`` epochs (at ``on_train_epoch_end``) both loaders are embedded with
    ``pl_module.embed({"input": x})`` (eval mode, no grad, training mode restored afterwards)
    and a :class:`~domainfm.tasks.monitors.knn.KNNClassifier` scores the queries against the
    bank. With ``linear_probe_steps > 0`` a fresh :class:`~domainfm.tasks.monitors.knn.LinearProbe`
    is also trained on the bank embeddings (``linear_probe_steps`` AdamW steps on random
    minibatches, seeded) and its query accuracy is logged as ``monitor/linear_top1``.

    Every process iterates the full loaders (do not give them a ``DistributedSampler``) and
    computes the same numbers; loggers write on rank zero.

    Args:
        bank_loader: iterable of dicts with ``"input"`` ``(B, C, *spatial)`` and ``"label"``
            ``(B,)`` integer classes: the labelled bank (e.g. a train subset).
        query_loader: the same format: the queries (e.g. a validation subset).
        num_classes: number of classes.
        every_n_epochs: evaluate after every this many epochs.
        k: neighbours per query.
        temperature: kNN weight temperature.
        linear_probe_steps: optimizer steps of the linear probe (0: no probe).
        linear_probe_batch_size: probe minibatch size.
        linear_probe_lr: probe AdamW learning rate.
        seed: seed of the probe's initialization and minibatches.
        name: the kNN metric's name.
        linear_probe_name: the probe metric's name.

    Attributes:
        last_values: the last logged metrics, by name.
    """

    def __init__(
        self,
        bank_loader: Iterable[Mapping[str, Any]],
        query_loader: Iterable[Mapping[str, Any]],
        num_classes: int,
        *,
        every_n_epochs: int = 1,
        k: int = 20,
        temperature: float = 0.07,
        linear_probe_steps: int = 0,
        linear_probe_batch_size: int = 256,
        linear_probe_lr: float = 1e-3,
        seed: int = 0,
        name: str = "monitor/knn_top1",
        linear_probe_name: str = "monitor/linear_top1",
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if linear_probe_steps < 0 or linear_probe_batch_size < 2:
            raise ValueError(
                "linear_probe_steps must be >= 0 and linear_probe_batch_size >= 2, got "
                f"{linear_probe_steps}, {linear_probe_batch_size}"
            )
        KNNClassifier(num_classes, k=k, temperature=temperature)  # validates the arguments
        self.bank_loader = bank_loader
        self.query_loader = query_loader
        self.num_classes = num_classes
        self.every_n_epochs = every_n_epochs
        self.k = k
        self.temperature = temperature
        self.linear_probe_steps = linear_probe_steps
        self.linear_probe_batch_size = linear_probe_batch_size
        self.linear_probe_lr = linear_probe_lr
        self.seed = seed
        self.name = name
        self.linear_probe_name = linear_probe_name
        self.last_values: dict[str, float] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        embed = _require(pl_module, "embed", type(self).__name__)
        with _inference(trainer, pl_module):
            bank, bank_labels = self._embed_all(trainer, pl_module, embed, self.bank_loader)
            queries, labels = self._embed_all(trainer, pl_module, embed, self.query_loader)
        knn = KNNClassifier(
            self.num_classes, k=self.k, temperature=self.temperature, sync_on_compute=False
        ).to(bank.device)
        knn.update_bank(bank, bank_labels)
        knn.update(queries, labels)
        metrics = {self.name: float(knn.compute())}
        if self.linear_probe_steps:
            metrics[self.linear_probe_name] = self._linear_probe(bank, bank_labels, queries, labels)
        self.last_values = metrics
        _log_scalars(trainer, metrics)

    @staticmethod
    def _embed_all(
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        embed: Callable[..., Any],
        loader: Iterable[Mapping[str, Any]],
    ) -> tuple[Tensor, Tensor]:
        features: list[Tensor] = []
        labels: list[Tensor] = []
        for batch in loader:
            x = trainer.precision_plugin.convert_input(batch["input"])
            z = _as_embeddings(embed({"input": move_data_to_device(x, pl_module.device)}))
            features.append(z)
            labels.append(torch.as_tensor(batch["label"]).to(z.device).long().reshape(-1))
        if not features:
            raise ValueError("KNNMonitor: a loader yielded no batches")
        return torch.cat(features), torch.cat(labels)

    def _linear_probe(
        self, bank: Tensor, bank_labels: Tensor, queries: Tensor, labels: Tensor
    ) -> float:
        if bank.shape[0] < 2:
            return math.nan
        batch_size = min(self.linear_probe_batch_size, bank.shape[0])
        with torch.random.fork_rng(devices=[]):  # seeded CPU stream, the run's stream untouched
            torch.default_generator.manual_seed(self.seed)
            probe = LinearProbe(bank.shape[1], self.num_classes, lr=self.linear_probe_lr)
            probe = probe.to(bank.device)
            for _ in range(self.linear_probe_steps):
                idx = torch.randperm(bank.shape[0])[:batch_size].to(bank.device)
                probe.fit_step(bank[idx], bank_labels[idx])
        return float(probe.accuracy(queries, labels))
