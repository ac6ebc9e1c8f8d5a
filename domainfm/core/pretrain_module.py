"""Lightning module for masked-modeling pretraining of any backbone.

The backbone encodes the visible tokens (``keep_idx`` from the loader's
:class:`~domainfm.core.masking.MaskingCollate`), the :class:`~domainfm.core.objectives.mae.MAE`
objective decodes and scores them. Optimizer: AdamW (no weight decay on biases, norms and
tokens); schedule: linear warmup + cosine, stepped per optimizer step. Scale-out (DDP, FSDP,
precision) is a Trainer setting.

Example::

    >>> backbone = VisionTransformerND(in_chans=1, spatial_dims=3, patch_size=16,
    ...                                embed_dim=64, depth=2, num_heads=4)
    >>> module = PretrainModule(backbone=backbone,
    ...                         objective=MAE(embed_dim=64, in_chans=1, patch_size=(16,) * 3))
"""

from __future__ import annotations

from functools import partial
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from domainfm.core.lr_schedule import warmup_cosine
from domainfm.core.objectives.mae import MAE


class PretrainModule(L.LightningModule):
    """Backbone + MAE objective, with AdamW and warmup-cosine.

    Args:
        backbone: a :class:`~domainfm.core.backbone.Backbone`.
        objective: the MAE objective (its ``patch_size`` must equal the backbone's).
        lr: peak learning rate.
        weight_decay: AdamW weight decay for weight matrices.
        betas: AdamW betas.
        warmup_steps: linear warmup length in optimizer steps.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        objective: MAE,
        lr: float = 1.5e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 10,
    ) -> None:
        super().__init__()
        patch = tuple(getattr(backbone, "patch_size", ()))
        if patch != objective.patch_size:
            raise ValueError(
                f"objective patch_size {objective.patch_size} differs from the backbone's {patch}"
            )
        self.backbone = backbone
        self.objective = objective
        self.lr = lr
        self.weight_decay = weight_decay
        self.betas = betas
        self.warmup_steps = warmup_steps

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x, mask, keep_idx = batch["input"], batch["mask"], batch["keep_idx"]
        tokens, grid = self.backbone.forward_tokens(x, keep_idx)  # type: ignore[operator]
        prefix = int(getattr(self.backbone, "num_prefix_tokens", 0))
        out = self.objective(tokens[:, prefix:], grid, keep_idx, mask, x)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=x.shape[0])
        for name, value in out.terms.items():
            self.log(f"train/{name}", value, batch_size=x.shape[0])
        return out.loss

    def configure_optimizers(self) -> Any:
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            is_matrix = param.ndim >= 2 and not name.endswith(("token", "pos_embed"))
            (decay if is_matrix else no_decay).append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.lr,
            betas=self.betas,
        )
        total = int(self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            partial(warmup_cosine, warmup_steps=self.warmup_steps, total_steps=total),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
