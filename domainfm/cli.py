"""The ``domainfm`` command: Lightning's CLI (``fit``, ``validate``, ``test``, ``predict``).

Example::

    domainfm fit --config configs/medical3d/mae_quickstart.yaml
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import lightning as L
from lightning.pytorch.cli import LightningCLI


class DomainFMCLI(LightningCLI):
    """LightningCLI with a closing summary line naming where outputs were written."""

    def after_fit(self) -> None:
        trainer = self.trainer
        where = trainer.log_dir or trainer.default_root_dir
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


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``domainfm`` console script."""
    DomainFMCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=list(args) if args is not None else None,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
