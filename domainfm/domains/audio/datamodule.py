"""Lightning data modules for audio: pretraining on unlabeled recordings, probing/fine-tuning
on labeled clips.

:class:`AudioPretrainDataModule` indexes the files (bad ones reported and skipped), computes
the front end's normalization over them once when the front end has none (cached as JSON),
and serves seeded random segments (:class:`~domainfm.domains.audio.segments.
AudioSegmentDataset`): ``views="single"`` with MAE masks drawn in the workers, or
``views="byola"`` with two BYOL-A views standardized per batch (BYOL-A's post-norm).

:class:`AudioClipDataModule` reads a metadata CSV (file, label, group columns) and splits it
by group — e.g. by speaker, so no voice is in both training and validation.

Both record the front end (with its statistics) in checkpoints (``input_contract``): an
export knows how to turn a waveform into its input.

Example (YAML for ``domainfm fit``)::

    data:
      class_path: domainfm.domains.audio.AudioPretrainDataModule
      init_args:
        files: [audio/librosa_example_clips/*.ogg]
        frontend: {class_path: domainfm.domains.audio.LogMelFrontend}
        frames: 96
        views: byola
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from torch.utils.data import Dataset, default_collate
from torchdata.stateful_dataloader import StatefulDataLoader

from domainfm.core.masking import DEFAULT_MASKING, MaskingSpec
from domainfm.core.registry import init_config
from domainfm.data.data_root import expand_files, resolve_data_path
from domainfm.data.datamodule import SeededDataModule
from domainfm.domains.audio.augment import SpecAugment, normalize_batch
from domainfm.domains.audio.contract import AudioContract
from domainfm.domains.audio.frontends import (
    Frontend,
    LogMelFrontend,
    build_frontend,
    compute_frontend_stats,
)
from domainfm.domains.audio.index import index_audio
from domainfm.domains.audio.sed_data import EventSequenceDataset
from domainfm.domains.audio.segments import AudioClipDataset, AudioSegmentDataset
from domainfm.pretrained.load import read_backbone_source


class BYOLACollate:
    """Collate BYOL-A samples and standardize each batch of views (BYOL-A's post-norm)."""

    def __call__(self, samples: list[Any]) -> dict[str, Any]:
        batch: dict[str, Any] = default_collate(samples)
        for key in ("view1", "view2"):
            batch[key] = normalize_batch(batch[key])
        return batch


def segment_collate(views: str, masking: MaskingSpec) -> Callable[[list[Any]], Any]:
    """The collate of pretraining segments: MAE masks (``"random"`` only) for
    ``views="single"``, BYOL-A's batch standardization of the two views otherwise."""
    return masking.collate(kinds=("random",)) if views == "single" else BYOLACollate()


def with_file_stats(frontend: Frontend, files: Sequence[str | Path], cache: str | None) -> Frontend:
    """``frontend`` when it normalizes already, else a copy normalizing with the statistics
    of its features over ``files`` (:func:`~domainfm.domains.audio.frontends.
    compute_frontend_stats`, cached in ``cache``)."""
    if frontend.mean is not None:
        return frontend
    mean, std = compute_frontend_stats(files, frontend, cache=cache)
    return frontend.with_stats(mean, std)


class AudioPretrainDataModule(SeededDataModule):
    """Random segments of unlabeled recordings for self-supervised pretraining.

    Args:
        files: audio files (paths or glob patterns under the example-data root).
        frontend: the front end (default BYOL-A's log-mel); its normalization is computed
            over the files when it has none.
        frames: segment length in frames.
        views: ``"single"`` (MAE: masks in the workers), ``"byola"`` (two BYOL-A views) or
            ``"frame_aligned"`` (two time-aligned views).
        masking: the MAE masks (``views="single"``): the backbone's patch size ``(F, T)``,
            the ratio (``"random"`` masking).
        specaugment: time/frequency masking of ``"input"``.
        stats_cache: JSON caching the front-end statistics.
        index_cache: JSON caching the file index.
        samples_per_epoch: segments per epoch.
        batch_size: segments per batch.
        **kwargs: ``num_workers``, ``seed`` (of the segment draws): see
            :class:`~domainfm.data.datamodule.SeededDataModule`.
    """

    def __init__(
        self,
        *,
        files: Sequence[str],
        frontend: Frontend | None = None,
        frames: int = 96,
        views: Literal["single", "byola", "frame_aligned"] = "single",
        masking: MaskingSpec = DEFAULT_MASKING,
        specaugment: SpecAugment | None = None,
        stats_cache: str | None = None,
        index_cache: str | None = None,
        samples_per_epoch: int = 1024,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.patterns = list(files)
        self.frontend = frontend if frontend is not None else LogMelFrontend()
        self.frames = frames
        self.views = views
        self.specaugment = specaugment
        self.stats_cache = stats_cache
        self.index_cache = index_cache
        self.samples_per_epoch = samples_per_epoch
        self.collate = segment_collate(views, masking)
        self.skipped: list[tuple[str, str]] = []
        self.train_set: AudioSegmentDataset | None = None

    def setup(self, stage: str) -> None:
        if self.train_set is not None:
            return
        infos, self.skipped = index_audio(expand_files(self.patterns), cache=self.index_cache)
        self.frontend = with_file_stats(self.frontend, [i.path for i in infos], self.stats_cache)
        self.train_set = AudioSegmentDataset(
            infos=infos,
            frontend=self.frontend,
            frames=self.frames,
            views=self.views,
            samples_per_epoch=self.samples_per_epoch,
            specaugment=self.specaugment,
        )

    def input_contract(self) -> AudioContract:
        """Rate, front end (with statistics), segment length; files skipped at indexing."""
        return AudioContract.of(
            self.frontend, self.frames, extra={"skipped_files": [list(s) for s in self.skipped]}
        )


def checkpoint_frontend(path: str | Path, frontend: Frontend | None = None) -> Frontend:
    """The front end recorded in an export / checkpoint (with its statistics).

    A given ``frontend`` must agree with it on every setting but the statistics: the
    checkpoint fixes the sample rate, the mel/fbank layout and the hop.

    Raises:
        ValueError: naming the checkpoint: it records no audio front end, or ``frontend``
            differs (e.g. a sample-rate mismatch), with the settings that differ.
    """

    config, _, _ = read_backbone_source(path)
    recorded = (config.get("input") or {}).get("frontend")
    if not isinstance(recorded, dict):
        raise ValueError(f"{path} records no audio front end; it is not an audio checkpoint")
    built = build_frontend(recorded)
    if frontend is not None:
        ours = init_config(frontend)
        if ours["architecture"] != recorded["architecture"]:
            raise ValueError(
                f"{path} was trained on {recorded['architecture']!r} features, not "
                f"{ours['architecture']!r}"
            )
        if frontend.sample_rate != built.sample_rate:
            raise ValueError(
                f"{path} fixes the sample rate at {built.sample_rate} Hz but the front end "
                f"given resamples to {frontend.sample_rate} Hz; drop frontend to use the "
                "checkpoint's"
            )
        differ = {
            k: (v, recorded["kwargs"].get(k))
            for k, v in ours["kwargs"].items()
            if k not in ("mean", "std") and recorded["kwargs"].get(k) != v
        }
        if differ:
            raise ValueError(f"{path} front end differs (given, recorded): {differ}")
    return built


def read_metadata(
    path: Path, *, file_column: str, label_column: str, group_column: str | None
) -> list[dict[str, str]]:
    """Rows of a metadata CSV (checked for the columns; files resolved next to the CSV)."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [file_column, label_column] + ([group_column] if group_column else [])
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; columns are {reader.fieldnames}")
        rows = list(reader)
    for row in rows:
        row[file_column] = str((path.parent / row[file_column]).resolve())
    return rows


class AudioClipDataModule(SeededDataModule):
    """Labeled clips from a metadata CSV, split by group (e.g. speaker).

    Args:
        metadata: CSV with a file column (paths relative to the CSV), a label column and a
            group column.
        file_column, label_column, group_column: the CSV's column names.
        val_groups: groups held out for validation (and test).
        frontend: the front end; its normalization is computed over the training clips when
            it has none.
        frontend_from: an export folder or ``.ckpt`` whose recorded front end (and
            statistics) to use — what a probe of a pretrained model needs; a ``frontend``
            given as well must match it (a sample-rate mismatch is an error naming it).
        frames: spectrogram length (clips cut or padded).
        specaugment: masking of training clips.
        stats_cache: JSON caching the front-end statistics.
        batch_size: clips per batch.
        **kwargs: ``num_workers``, ``seed`` (of the training order and cuts): see
            :class:`~domainfm.data.datamodule.SeededDataModule`.
    """

    def __init__(
        self,
        *,
        metadata: str,
        val_groups: Sequence[str],
        file_column: str = "file",
        label_column: str = "label",
        group_column: str = "group",
        frontend: Frontend | None = None,
        frontend_from: str | None = None,
        frames: int = 96,
        specaugment: SpecAugment | None = None,
        stats_cache: str | None = None,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.metadata = metadata
        self.val_groups = [str(g) for g in val_groups]
        self.file_column, self.label_column, self.group_column = (
            file_column,
            label_column,
            group_column,
        )
        if frontend_from is not None:
            frontend = checkpoint_frontend(resolve_data_path(frontend_from), frontend)
        self.frontend = frontend if frontend is not None else LogMelFrontend()
        self.frames = frames
        self.specaugment = specaugment
        self.stats_cache = stats_cache
        self.class_names: list[str] = []
        self.train_set: Any = None
        self.val_set: Any = None

    def setup(self, stage: str) -> None:
        if self.val_set is not None:
            return
        train, val = self._split()
        self.train_set, self.val_set = (
            self._dataset(*train, train=True),
            self._dataset(*val, train=False),
        )

    def _split(self) -> tuple[tuple[list[str], list[int]], tuple[list[str], list[int]]]:
        """Files and class ids of the training and the validation clips (split by group);
        computes the front end's statistics over the training clips when it has none."""
        path = resolve_data_path(self.metadata)
        rows = read_metadata(
            path,
            file_column=self.file_column,
            label_column=self.label_column,
            group_column=self.group_column,
        )
        groups = {r[self.group_column] for r in rows}
        unknown = sorted(set(self.val_groups) - groups)
        if unknown or not self.val_groups:
            raise ValueError(
                f"{path}: val_groups {unknown or '[]'} not among groups {sorted(groups)}"
            )
        self.class_names = sorted({r[self.label_column] for r in rows}, key=_natural)
        ids = {name: i for i, name in enumerate(self.class_names)}

        def clips(part: list[dict[str, str]]) -> tuple[list[str], list[int]]:
            return [r[self.file_column] for r in part], [ids[r[self.label_column]] for r in part]

        train = clips([r for r in rows if r[self.group_column] not in self.val_groups])
        val = clips([r for r in rows if r[self.group_column] in self.val_groups])
        self.frontend = with_file_stats(self.frontend, train[0], self.stats_cache)
        return train, val

    def _dataset(self, files: list[str], labels: list[int], *, train: bool) -> Dataset[Any]:
        """The training or validation dataset of ``files`` labeled ``labels``."""
        return AudioClipDataset(
            files=files,
            labels=labels,
            frontend=self.frontend,
            frames=self.frames,
            train=train,
            specaugment=self.specaugment if train else None,
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def val_dataloader(self) -> StatefulDataLoader:
        assert self.val_set is not None, "call setup() first"
        return self.eval_loader(self.val_set)

    def test_dataloader(self) -> StatefulDataLoader:
        return self.val_dataloader()

    def input_contract(self) -> AudioContract:
        """Rate, front end (with statistics), clip length, class names, the held-out groups."""
        return AudioContract.of(
            self.frontend,
            self.frames,
            class_names=self.class_names,
            extra={"val_groups": self.val_groups},
        )


def _natural(text: str) -> tuple[int, str]:
    """Sort key: numbers numerically ("2" < "10"), then text."""
    return (int(text), "") if text.lstrip("-").isdigit() else (1 << 62, text)


class SoundEventDataModule(AudioClipDataModule):
    """Sound event detection data: sequences composed of the labeled clips with silences at
    known offsets (:class:`~domainfm.domains.audio.sed_data.EventSequenceDataset`), training
    sequences from the training groups' clips, validation ones (fixed seeds) from the
    held-out groups'. Arguments as :class:`AudioClipDataModule`, plus:

    Args:
        max_events: most clips per sequence.
        sequences_per_epoch: training sequences per epoch.
        val_sequences: validation sequences.
    """

    def __init__(
        self,
        *,
        max_events: int = 3,
        sequences_per_epoch: int = 256,
        val_sequences: int = 32,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("frames", 400)
        super().__init__(**kwargs)
        self.max_events = max_events
        self.sequences_per_epoch = sequences_per_epoch
        self.val_sequences = val_sequences

    def _dataset(self, files: list[str], labels: list[int], *, train: bool) -> Dataset[Any]:
        return EventSequenceDataset(
            files=files,
            labels=labels,
            num_classes=self.num_classes,
            frontend=self.frontend,
            frames=self.frames,
            max_events=self.max_events,
            length=self.sequences_per_epoch if train else self.val_sequences,
        )
