"""Lightning module for self-supervised pretraining of any backbone with weighted objectives.

One backbone, any weighted set of objectives from :mod:`domainfm.core.objectives`:

* **masked** objectives (:class:`~domainfm.core.objectives.mae.MAE`) read ``batch["input"]``,
  ``batch["mask"]`` and ``batch["keep_idx"]`` (from :class:`~domainfm.core.masking.MaskingCollate`);
* **two-view** objectives read ``batch["view1"]`` and ``batch["view2"]`` and get their own
  projection head: InfoNCE, Barlow Twins and VICReg compare projections of both views; BYOL
  adds a predictor and an EMA teacher of backbone + projector; MoCo compares a query with
  the key of an EMA key encoder. Teachers follow BYOL's cosine momentum schedule.
* **batch** objectives (:class:`~domainfm.core.objectives.base.BatchObjective`, e.g. VoCo's
  position contrast, rotation prediction, inpainting) read the keys they need through a
  :class:`~domainfm.core.batch_features.BatchFeatures` and own their heads. I-JEPA's also
  owns an EMA target encoder of the backbone, updated with the teachers.

Backbone outputs are shared: each batch key is encoded once per step whatever number of
objectives read it.

Objectives that size heads from the backbone
(:class:`~domainfm.core.objectives.base.BackboneBound`: MAE's decoder, inpainting, rotation,
VoCo) are bound to it in the constructor, so their ``embed_dim`` / ``in_chans`` /
``patch_size`` are left out of configs (or checked against the backbone when given), and
every parameter exists before a checkpoint is loaded. Likewise with a masked objective the
data module's masks are drawn on the backbone's token grid (:func:`mask_on_backbone_grid`, at
``setup``), so the data module's masking needs no patch size either.

The total loss is ``Σ weight[name] * loss[name]``; every term is logged. Optimizer: AdamW
(no decay on biases, norms, tokens; optional layer-wise LR decay); schedule: linear warmup +
cosine per optimizer step. Precision and scale-out (DDP, FSDP) are Trainer settings.

Checkpoints carry, beyond Lightning's state, a ``"domainfm"`` entry describing the backbone
(architecture + kwargs), domain, input contract and recipe — what ``domainfm export`` needs —
and the torch RNG states, restored before the first resumed batch so a resumed run draws the
same random numbers as an uninterrupted one.

Example::

    >>> vit = VisionTransformerND(in_chans=1, spatial_dims=3, patch_size=16, embed_dim=64,
    ...                           depth=2, num_heads=4)
    >>> module = PretrainModule(backbone=vit, objectives={"mae": MAE(decoder_dim=64)})
    >>> module.objectives["mae"].patch_size  # the decoder is sized from the backbone
    (16, 16, 16)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.contract import recorded_contract
from domainfm.core.ema import EMATeacher, cosine_momentum
from domainfm.core.jsonable import to_jsonable
from domainfm.core.masking import MaskingCollate
from domainfm.core.objectives.base import BackboneBound, BatchObjective
from domainfm.core.objectives.byol import BYOL
from domainfm.core.objectives.ijepa import IJEPA
from domainfm.core.objectives.mae import MAE
from domainfm.core.objectives.mae_targets import NormalizedPixelTarget
from domainfm.core.objectives.moco import MoCo
from domainfm.core.patching import patchify, unpatchify
from domainfm.core.registry import init_config
from domainfm.tasks.heads.projection import ProjectionHead
from domainfm.tasks.lr_schedule import adamw_warmup_cosine
from domainfm.tasks.param_groups import param_groups

MASKED = (MAE,)
TEACHER = (BYOL, MoCo)
EMA_TARGET = (IJEPA,)  # objectives owning an EMA copy of the backbone


class PretrainModule(L.LightningModule):
    """Backbone + weighted objectives, with heads, EMA teachers, AdamW and warmup-cosine.

    Args:
        backbone: a :class:`~domainfm.core.backbone.Backbone`.
        objectives: name → objective module (MAE, InfoNCE, MoCo, BYOL, BarlowTwins, VICReg).
        weights: name → loss weight (default 1 each).
        projector_hidden_dim: hidden width of the projection heads of two-view objectives.
        projector_dim: output width of those heads (MoCo's ``dim`` must equal it).
        lr: peak learning rate (before layer-wise scaling).
        weight_decay: AdamW weight decay for weight matrices.
        betas: AdamW betas.
        warmup_steps: linear warmup length in optimizer steps.
        layer_decay: layer-wise LR decay factor for backbones with ``blocks``; ``None``: off.
        ema_momentum: base momentum of EMA teachers and target encoders (cosine-scheduled to 1).
        domain: name of the domain plugin the data came from (recorded in exports).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        objectives: Mapping[str, nn.Module],
        weights: Mapping[str, float] | None = None,
        projector_hidden_dim: int = 2048,
        projector_dim: int = 256,
        lr: float = 1.5e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 10,
        layer_decay: float | None = None,
        ema_momentum: float = 0.996,
        domain: str | None = None,
    ) -> None:
        super().__init__()
        if not objectives:
            raise ValueError("objectives is empty: give at least one objective")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(objectives))
        if unknown:
            raise ValueError(f"weights name objectives that do not exist: {unknown}")
        self.backbone = backbone
        self.objectives = nn.ModuleDict(dict(objectives))
        self.weights = {name: float(weights.get(name, 1.0)) for name in objectives}
        embed_dim = int(getattr(backbone, "embed_dim"))  # noqa: B009 - part of the contract
        self.projectors = nn.ModuleDict()
        self.predictors = nn.ModuleDict()
        self.teachers = nn.ModuleDict()
        for name, objective in objectives.items():
            if isinstance(objective, BackboneBound):
                try:
                    objective.bind_backbone(backbone)  # sizes its heads from the backbone
                except ValueError as err:
                    raise ValueError(f"objective {name!r}: {err}") from err
            if isinstance(objective, MASKED):
                _decoder_start(backbone, objective)  # refuses a decoder wanting absent tokens
            if isinstance(objective, (BatchObjective, *MASKED)):
                continue  # brings its own heads (a masked objective: its decoder)
            self.projectors[name] = ProjectionHead(
                in_dim=embed_dim, hidden_dim=projector_hidden_dim, out_dim=projector_dim
            )
            if isinstance(objective, BYOL):
                self.predictors[name] = ProjectionHead(
                    in_dim=projector_dim, hidden_dim=projector_hidden_dim, out_dim=projector_dim
                )
            if isinstance(objective, TEACHER):
                self.teachers[name] = EMATeacher(self._student(name))
        self.lr = lr
        self.weight_decay = weight_decay
        self.betas = betas
        self.warmup_steps = warmup_steps
        self.layer_decay = layer_decay
        self.ema_momentum = ema_momentum
        self.domain = domain
        self._rng_to_restore: dict[str, Any] | None = None

    # -- forward pieces -----------------------------------------------------------------
    def _student(self, name: str) -> nn.Module:
        return nn.Sequential(self.backbone, self.projectors[name])

    def _masked(self, objective: nn.Module, batch: Mapping[str, Tensor]) -> Any:
        x, mask, keep_idx = batch["input"], batch["mask"], batch["keep_idx"]
        tokens, grid = self.backbone.forward_tokens(x, keep_idx)  # type: ignore[operator]
        start = _decoder_start(self.backbone, objective)
        return objective(tokens[:, start:], grid, keep_idx, mask, x)

    def _two_view(self, name: str, objective: nn.Module, features: BatchFeatures) -> Any:
        projector = self.projectors[name]
        z1 = projector(features.pooled("view1"))  # (B, projector_dim)
        if isinstance(objective, MoCo):
            with torch.no_grad():
                key = self.teachers[name](features.batch["view2"])
            return objective(z1, key)
        z2 = projector(features.pooled("view2"))
        if isinstance(objective, BYOL):
            predictor = self.predictors[name]
            with torch.no_grad():
                t1 = self.teachers[name](features.batch["view1"])
                t2 = self.teachers[name](features.batch["view2"])
            return objective(predictor(z1), predictor(z2), t1, t2)
        return objective(z1, z2)

    def compute_losses(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Total weighted loss and every logged term for one batch."""
        total: Tensor | None = None
        logs: dict[str, Tensor] = {}
        features = BatchFeatures(self.backbone, batch)  # one backbone pass per view
        for name, objective in self.objectives.items():
            if isinstance(objective, BatchObjective):
                out = objective.forward_batch(features)
            elif isinstance(objective, MASKED):
                out = self._masked(objective, batch)
            else:
                out = self._two_view(name, objective, features)
            logs[name] = out.loss.detach()
            for term, value in out.terms.items():
                if term != name:
                    logs[f"{name}/{term}"] = value.detach()
            weighted = self.weights[name] * out.loss
            total = weighted if total is None else total + weighted
        assert total is not None
        return total, logs

    # -- Lightning hooks ----------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor] | None, batch_idx: int) -> Tensor | None:
        if batch is None:  # every item of a streamed batch was skipped (and counted)
            return None
        loss, logs = self.compute_losses(batch)
        size = _batch_size(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for key, value in logs.items():
            self.log(f"train/{key}", value, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, logs = self.compute_losses(batch)
        size = _batch_size(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        for key, value in logs.items():
            self.log(f"val/{key}", value, batch_size=size, sync_dist=True)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, _ = self.compute_losses(batch)
        size = _batch_size(batch)
        self.log("test/loss", loss, batch_size=size, sync_dist=True)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Pooled embeddings ``(B, D)`` of the batch (see :meth:`embed`)."""
        return self.embed(batch)

    def setup(self, stage: str) -> None:
        """With a masked objective, make the data module draw its masks on the backbone's
        token grid (before any loader is built; see :func:`mask_on_backbone_grid`)."""
        if any(isinstance(o, MASKED) for o in self.objectives.values()):
            datamodule = getattr(self.trainer, "datamodule", None)
            mask_on_backbone_grid(getattr(datamodule, "collate", None), self.backbone)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._rng_to_restore is not None:  # first batch after a resume
            torch.set_rng_state(self._rng_to_restore["torch"])
            if torch.cuda.is_available() and self._rng_to_restore.get("cuda"):
                torch.cuda.set_rng_state_all(self._rng_to_restore["cuda"])
            self._rng_to_restore = None

    def configure_callbacks(self) -> list[L.Callback]:
        """With EMA teachers, :class:`TeacherUpdate` (updates them after each batch)."""
        return [TeacherUpdate()] if self.teachers or self._ema_targets() else []

    def _ema_targets(self) -> list[IJEPA]:
        return [o for o in self.objectives.values() if isinstance(o, EMA_TARGET)]

    def update_teachers(self) -> None:
        """One EMA step of every teacher towards its student, and of every objective's target
        encoder towards the backbone (cosine momentum)."""
        targets = self._ema_targets()
        if not self.teachers and not targets:
            return
        total = max(1, int(self.trainer.estimated_stepping_batches))
        momentum = cosine_momentum(self.global_step, total, base=self.ema_momentum)
        for name, teacher in self.teachers.items():
            assert isinstance(teacher, EMATeacher)
            teacher.update(self._student(name), momentum)
        for objective in targets:
            objective.update_target(self.backbone, momentum)
        self.log("train/ema_momentum", momentum, batch_size=1)

    def configure_optimizers(self) -> Any:
        depth = len(getattr(self.backbone, "blocks", [])) or None
        groups = param_groups(
            self,
            weight_decay=self.weight_decay,
            layer_decay=self.layer_decay,
            depth=depth if self.layer_decay is not None else None,
        )
        return adamw_warmup_cosine(
            groups,
            lr=self.lr,
            warmup_steps=self.warmup_steps,
            total_steps=int(self.trainer.estimated_stepping_batches),
            betas=self.betas,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["domainfm"] = self.export_metadata()
        checkpoint["domainfm_rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = checkpoint.get("domainfm_rng")

    # -- descriptions and monitors ------------------------------------------------------
    def export_metadata(self) -> dict[str, Any]:
        """Backbone architecture + kwargs, domain, input contract and recipe (JSON-safe)."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        contract = recorded_contract(datamodule)
        return to_jsonable(
            {
                "backbone": init_config(self.backbone),
                "domain": self.domain,
                "input": contract,
                "recipe": {
                    "objectives": {
                        name: {"class": type(o).__name__, **_kwargs_or_empty(o)}
                        for name, o in self.objectives.items()
                    },
                    "weights": self.weights,
                    "optimizer": {
                        "name": "AdamW",
                        "lr": self.lr,
                        "betas": self.betas,
                        "weight_decay": self.weight_decay,
                        "layer_decay": self.layer_decay,
                    },
                    "schedule": {"warmup_steps": self.warmup_steps, "decay": "cosine"},
                    "global_step": self.global_step if trainer is not None else 0,
                },
            }
        )

    @torch.no_grad()
    def embed(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Pooled backbone embeddings ``(B, D)`` of ``batch["input"]`` (or ``"view1"``)."""
        x = batch["input"] if "input" in batch else batch["view1"]
        out: Tensor = self.backbone(x)
        return out

    @torch.no_grad()
    def reconstruct_preview(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Input, masked input and reconstruction ``(B, C, *spatial)`` from the MAE objective
        (or from the first objective with a ``preview``, e.g. inpainting).

        Masked patches of the reconstruction are the decoder's predictions mapped back to
        intensities with each patch's own mean/std; visible patches show the input.
        """
        mae = next((o for o in self.objectives.values() if isinstance(o, MAE)), None)
        if mae is None:  # objectives with their own preview (e.g. inpainting)
            for objective in self.objectives.values():
                preview = getattr(objective, "preview", None)
                if callable(preview):
                    out: dict[str, Tensor] = preview(BatchFeatures(self.backbone, batch))
                    return out
        if mae is None or not isinstance(mae.target, NormalizedPixelTarget):
            raise TypeError(
                "reconstruct_preview needs an MAE objective with a pixel target or an objective "
                "with a preview (e.g. Inpainting)"
            )
        x, mask, keep_idx = batch["input"], batch["mask"], batch["keep_idx"]
        tokens, grid = self.backbone.forward_tokens(x, keep_idx)  # type: ignore[operator]
        start = _decoder_start(self.backbone, mae)
        pred = mae.reconstruct(tokens[:, start:], grid, keep_idx).float()  # (B, N, P*C)
        pixels = patchify(x.float(), grid)  # (B, N, P*C)
        if mae.target.normalize:
            mean = pixels.mean(dim=-1, keepdim=True)
            std = (pixels.var(dim=-1, keepdim=True) + mae.target.eps).sqrt()
            pred = pred * std + mean
        hidden = mask[..., None]
        channels = x.shape[1]
        return {
            "input": x.float(),
            "masked": unpatchify(pixels.masked_fill(hidden, 0.0), grid, channels),
            "reconstruction": unpatchify(torch.where(hidden, pred, pixels), grid, channels),
        }


def mask_on_backbone_grid(collate: object, backbone: nn.Module) -> None:
    """Make a data module's :class:`~domainfm.core.masking.MaskingCollate` draw its masks on
    ``backbone``'s token grid: its patch size becomes the backbone's ``patch_size`` (the grid
    a masked objective reads the masks on), replacing the data module's own
    ``masking.patch_size`` when that differs (with a warning). Any other collate is left alone.

    This is how a config gives the patch size once, in the backbone: a LightningCLI link
    cannot reach it, the size being a field of the data module's ``masking`` spec.
    """
    if not isinstance(collate, MaskingCollate):
        return
    patch = tuple(int(p) for p in getattr(backbone, "patch_size"))  # noqa: B009 - the contract
    given = collate.patch_size
    if (tuple(given) if not isinstance(given, int) else (given,) * len(patch)) != patch:
        rank_zero_warn(
            f"masks drawn on the backbone's token grid (patch size {patch}) instead of the data "
            f"module's masking patch_size {given}"
        )
        collate.patch_size = patch


class TeacherUpdate(L.Callback):
    """Updates a :class:`PretrainModule`'s EMA teachers after each training batch, as a
    callback: Lightning runs checkpoint callbacks after the others (and a module's own
    ``on_train_batch_end`` after every callback), so a checkpoint saved after a step holds
    that step's teachers and a resume from it is exact."""

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        assert isinstance(pl_module, PretrainModule)
        pl_module.update_teachers()


def _batch_size(batch: Mapping[str, Any]) -> int:
    """Rows of the first tensor in the batch (for Lightning's per-batch averaging)."""
    return int(next(v for v in batch.values() if isinstance(v, Tensor)).shape[0])


def _kwargs_or_empty(obj: object) -> dict[str, Any]:
    try:
        return dict(init_config(obj)["kwargs"])
    except TypeError:
        return {}


def _decoder_start(backbone: nn.Module, objective: nn.Module) -> int:
    """Index of the first encoder token a masked objective reads: after the prefix (class)
    tokens, except the last ``decoder_prefix_tokens`` that its decoder takes too."""
    prefix = int(getattr(backbone, "num_prefix_tokens", 0))
    passed = int(getattr(objective, "decoder_prefix_tokens", 0))
    if passed > prefix:
        raise ValueError(
            f"the objective's decoder takes {passed} prefix token(s), the backbone has {prefix}"
        )
    return prefix - passed
