"""The LightningCLI behind ``domainfm fit|validate|test|predict``.

Adds what every run needs: safe, atomic checkpoint IO (never unpickles code) and one closing
summary line from rank 0.

A config gives each size once, in the backbone, without parser links: the objectives of a
:class:`~domainfm.tasks.pretrain_module.PretrainModule` size their heads from its backbone,
and its ``setup`` makes the data module draw MAE masks on the backbone's token grid. (A
link from the model to ``data.init_args.masking.patch_size`` cannot work: the target is a
field of a spec, and LightningCLI records instantiation-link targets into the hyperparameters
of every data module, failing for those without ``masking``.)

Example::

    >>> DomainFMCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True,
    ...             subclass_mode_data=True, args=["fit", "--config", "configs/x.yaml"])
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO

from domainfm.tasks.checkpoint_plugin import safe_checkpoint_io


class DomainFMCLI(LightningCLI):
    """LightningCLI with safe checkpoint loading and a closing summary line."""

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """Add the safe-loading CheckpointIO plugin unless the config brings its own."""
        plugins = self._get(self.config_init, "trainer", default={}).get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(safe_checkpoint_io())
        return super().instantiate_trainer(plugins=plugins, **kwargs)

    def after_fit(self) -> None:
        trainer = self.trainer
        where = trainer.log_dir or trainer.default_root_dir  # a collective under DDP: all ranks
        if not trainer.is_global_zero:  # one summary per job, from rank 0
            return
        ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(
            trainer.checkpoint_callback, "best_model_path", ""
        )
        loss = trainer.callback_metrics.get("train/loss")
        loss_text = f"final train/loss {float(loss):.4f}, " if loss is not None else ""
        print(
            f"domainfm fit: {trainer.global_step} steps, {loss_text}logs in {where}"
            + (f", checkpoint {ckpt}" if ckpt else ""),
            flush=True,
        )
