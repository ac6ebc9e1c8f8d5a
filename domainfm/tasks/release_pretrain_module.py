"""Continue a released model's own pretext task on your data (domain-adaptive pretraining).

:class:`ReleasePretrainModule` is a :class:`~domainfm.tasks.pretrain_module.PretrainModule`
whose backbone and objective come from a released checkpoint: the encoder loaded strictly,
and, for releases that ship their MAE decoder (Prithvi, SatMAE, AudioMAE, SSL4EO MAE, ...),
the decoder too (:func:`~domainfm.pretrained.pretext.load_release_with_pretext`), so pretraining
picks up where the release stopped. A release without a pretext head starts the objectives the
config gives fresh, and says so. Both load reports are printed; the checkpoint's provenance
names the release, its file and its licence, so ``domainfm export`` carries them on.

Config (``domainfm fit --config ...``)::

    model:
      class_path: domainfm.tasks.release_pretrain_module.ReleasePretrainModule
      init_args:
        released: prithvi-eo-1.0-100m
        pretrained: /models/Prithvi_100M.pt
        pretext_kwargs: {mask_ratio: 0.75}      # loss options only; sizes are the release's
        lr: 1.0e-4
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from domainfm.pretrained.pretext import load_release_with_pretext
from domainfm.tasks.pretrain_module import PretrainModule


class ReleasePretrainModule(PretrainModule):
    """Pretraining that starts from a release's encoder and, where shipped, its pretext head.

    Args:
        released: the registered release (``domainfm releases`` lists them).
        pretrained: the local weights file of that release.
        objectives: further objectives, started fresh; required when the release ships no
            pretext head. The pretext head's own objective comes from the release.
        model_kwargs: backbone kwargs overriding the release's (e.g. a grid size).
        pretext_kwargs: options of the pretext objective (loss options; sizes are the
            release's and a differing size fails the strict load).
        allow_missing: fnmatch patterns of backbone keys allowed to stay initialized.
        **kwargs: the other :class:`PretrainModule` arguments (lr, weights, domain, ...).
    """

    def __init__(
        self,
        *,
        released: str,
        pretrained: str,
        objectives: Mapping[str, nn.Module] | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        pretext_kwargs: Mapping[str, Any] | None = None,
        allow_missing: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        loaded = load_release_with_pretext(
            released,
            pretrained,
            model_kwargs=model_kwargs,
            pretext_kwargs=pretext_kwargs,
            allow_missing=allow_missing,
        )
        fresh = dict(objectives or {})
        combined: dict[str, nn.Module] = {}
        if loaded.objective is not None and loaded.entry.pretext is not None:
            head = loaded.entry.pretext.objective
            if head in fresh:
                raise ValueError(
                    f"objective {head!r} comes from the pretext head of {released!r}; set its "
                    "options with pretext_kwargs instead of giving it in objectives"
                )
            combined[head] = loaded.objective
        elif not fresh:
            raise ValueError(
                f"{pretrained}: {loaded.fresh_reason}; give objectives to pretrain it with"
            )
        combined.update(fresh)
        super().__init__(backbone=loaded.backbone, objectives=combined, **kwargs)
        print(f"ReleasePretrainModule: {loaded.report.summary()}")
        if loaded.pretext_report is not None:
            print(f"ReleasePretrainModule: {loaded.pretext_report.summary()}")
        if fresh:
            why = f" ({loaded.fresh_reason})" if loaded.fresh_reason else ""
            print(f"ReleasePretrainModule: objectives {sorted(fresh)} start fresh{why}")
        self.release = {
            "released": released,
            "file": str(Path(pretrained)),
            "license": loaded.entry.license,
            "reference": loaded.entry.reference,
            "pretext_head": "loaded" if loaded.objective is not None else "fresh",
        }
        self.release_input = dict(loaded.entry.input)

    def export_metadata(self) -> dict[str, Any]:
        """:meth:`PretrainModule.export_metadata` plus the release this run started from (and
        its input contract when the data module records none)."""
        meta = super().export_metadata()
        meta["provenance"] = {**meta.get("provenance", {}), "initialized_from": self.release}
        meta["license"] = self.release["license"]
        if not meta.get("input"):
            meta["input"] = self.release_input
        return meta
