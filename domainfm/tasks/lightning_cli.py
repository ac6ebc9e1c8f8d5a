"""The LightningCLI behind ``domainfm fit|validate|test|predict``.

Adds what every run needs: the trainer settings all configs share (one device, a CSV logger
in the run folder, ``last.ckpt`` for exact resume), safe, atomic checkpoint IO (never
unpickles code) and one closing summary line from rank 0.

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

import os
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import CheckpointIO

from domainfm.core.checkpoint_io import safe_torch_load
from domainfm.tasks.checkpoint_plugin import safe_checkpoint_io

TRAINER_DEFAULTS: dict[str, Any] = {
    "devices": 1,
    "log_every_n_steps": 5,
    "enable_model_summary": False,
}
"""Trainer settings every config shares unless it sets its own (one device: a multi-GPU run
says how many; the run's one summary line replaces Lightning's model table)."""


class DomainFMCLI(LightningCLI):
    """LightningCLI with the shared trainer block, safe checkpoint loading and a closing
    summary line.

    What every config would otherwise repeat is added here unless the config brings its own:
    :data:`TRAINER_DEFAULTS`, a CSV logger in ``default_root_dir`` (``metrics.csv`` under
    ``lightning_logs/version_N``), a ``ModelCheckpoint`` keeping ``last.ckpt`` (exact resume)
    and the safe, atomic checkpoint IO plugin.
    """

    def __init__(
        self,
        model_class: Any = None,
        datamodule_class: Any = None,
        *,
        trainer_defaults: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model_class,
            datamodule_class,
            trainer_defaults={**TRAINER_DEFAULTS, **(trainer_defaults or {})},
            **kwargs,
        )

    def _parse_ckpt_path(self) -> None:
        """Lightning reads ``--ckpt_path``'s hyperparameters before anything else; a file it
        cannot read fails here with the file named (through the safe loader's errors) instead
        of a bare unpickling traceback."""
        try:
            super()._parse_ckpt_path()
        except Exception as err:
            subcommand = self.config.get("subcommand")
            path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if path is None:
                raise
            safe_torch_load(path)  # raises UnsafeCheckpointError / ValueError naming the file
            raise ValueError(f"{path}: not a checkpoint this command can resume: {err}") from err

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        config = self._get(self.config_init, "trainer", default={})
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(safe_checkpoint_io())
        if config.get("logger") in (None, True):
            kwargs["logger"] = CSVLogger(save_dir=config.get("default_root_dir") or os.getcwd())
        callbacks = config.get("callbacks") or []
        if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, ModelCheckpoint(save_last=True)]
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
