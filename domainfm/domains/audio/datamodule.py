"""Lightning data modules for audio: pretraining on unlabeled recordings, probing/fine-tuning
on labeled clips.

:class:`AudioPretrainDataModule` indexes the files (bad ones reported and skipped), computes
the front end's normalization over them once when the front end has none (cached as JSON),
and serves seeded random segments (:class:`~domainfm.domains.audio.segments.
AudioSegmentDataset`): ``views="single"`` with MAE masks drawn in the workers, or
``views="byola"`` with two BYOL-A views standardized per batch (BYOL-A's post-norm).

:class:`AudioClipDataModule` reads a metadata CSV (file, label, group columns) and splits it
by group — e.g. by speaker, so no voice is in both training and validation.

**Bad files are skipped and counted, as** ``domainfm prepare`` **skips them.** The index
reads headers only. Each training file is therefore checked in full the first time a
dataset reads it (:class:`~domainfm.domains.audio.file_checks.FileChecks`: container,
decoded length, FLAC MD5, NaN/Inf, silence). A file that fails gets one
:class:`~domainfm.domains.audio.index.AudioSkippedWarning` naming it and the reason, and the
sample is replaced deterministically, so seeded and resumed runs stay exact and batches keep
their shapes. Validation clips are checked when ``setup`` runs, so that every epoch
evaluates the same set. At the end of ``fit`` the number of skipped files is logged as
``data/skipped_files`` and listed in one warning; :attr:`skipped_files` holds them.

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
from functools import partial
from pathlib import Path
from typing import Any, Literal

from torch.utils.data import Dataset, default_collate
from torchdata.stateful_dataloader import StatefulDataLoader

from domainfm.core.masking import DEFAULT_MASKING, MaskingSpec
from domainfm.data.data_root import expand_files, resolve_data_path
from domainfm.data.datamodule import SeededDataModule
from domainfm.domains.audio.augment import SpecAugment, normalize_batch
from domainfm.domains.audio.contract import AudioContract, checkpoint_frontend
from domainfm.domains.audio.file_checks import FileChecks, report_skipped
from domainfm.domains.audio.frontends import (
    Frontend,
    LogMelFrontend,
    compute_frontend_stats,
)
from domainfm.domains.audio.index import index_audio
from domainfm.domains.audio.sed_data import EventSequenceDataset
from domainfm.domains.audio.segments import AudioClipDataset, AudioSegmentDataset


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


def with_file_stats(
    frontend: Frontend,
    files: Sequence[str | Path],
    cache: str | None,
    checks: FileChecks | None = None,
) -> Frontend:
    """``frontend`` when it normalizes already, else a copy normalizing with the statistics
    of its features over ``files`` (:func:`~domainfm.domains.audio.frontends.
    compute_frontend_stats`, cached in ``cache``). With ``checks``, a file that fails is
    left out of the statistics and marked bad there."""
    if frontend.mean is not None:
        return frontend
    on_bad = checks.mark_bad_path if checks is not None else None
    mean, std = compute_frontend_stats(files, frontend, cache=cache, on_bad=on_bad)
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
        self.stats_cache = stats_cache
        self.index_cache = index_cache
        self.segments = partial(
            AudioSegmentDataset,
            frames=frames,
            views=views,
            samples_per_epoch=samples_per_epoch,
            specaugment=specaugment,
        )
        """The segments of the indexed files (built by :meth:`setup`), with these settings."""
        self.collate = segment_collate(views, masking)
        self.skipped: list[tuple[str, str]] = []
        self.train_set: AudioSegmentDataset | None = None

    def setup(self, stage: str) -> None:
        if self.train_set is not None:
            return
        infos, self.skipped = index_audio(expand_files(self.patterns), cache=self.index_cache)
        paths = [i.path for i in infos]
        checks = FileChecks(paths)
        self.frontend = with_file_stats(self.frontend, paths, self.stats_cache, checks)
        self.train_set = self.segments(infos=infos, frontend=self.frontend, checks=checks)

    @property
    def skipped_files(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every file left out: at indexing, and when first read (in
        any loader worker)."""
        checks = self.train_set.checks if self.train_set is not None else None
        read = checks.skipped() if checks is not None else []
        return [*self.skipped, *read]

    def teardown(self, stage: str) -> None:
        """At the end of ``fit``: the skipped files logged and listed (:func:`~domainfm.
        domains.audio.file_checks.report_skipped`)."""
        if stage == "fit" and self.train_set is not None:
            total = len(self.skipped) + len(self.train_set.infos)
            report_skipped(self, self.skipped_files, total)

    def input_contract(self) -> AudioContract:
        """Rate, front end (with statistics), segment length; files skipped at indexing."""
        return AudioContract.of(
            self.frontend, self.frames, extra={"skipped_files": [list(s) for s in self.skipped]}
        )


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

    dataset_type: Callable[..., Dataset[Any]] = AudioClipDataset
    """The dataset of a split's clips (built by :meth:`_dataset`)."""

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
        self.train_checks: FileChecks | None = None
        self.val_skipped: list[tuple[str, str]] = []

    def setup(self, stage: str) -> None:
        if self.val_set is not None:
            return
        train, val = self._split()
        self.train_checks = FileChecks(train[0])
        self.frontend = with_file_stats(
            self.frontend, train[0], self.stats_cache, self.train_checks
        )
        val = self._checked(*val)
        self.train_set, self.val_set = (
            self._dataset(*train, train=True, checks=self.train_checks),
            self._dataset(*val, train=False, checks=FileChecks(val[0])),
        )

    def _checked(self, files: list[str], labels: list[int]) -> tuple[list[str], list[int]]:
        """The validation clips that pass their check (the others warned about and listed in
        ``val_skipped``), so that every epoch evaluates the same clips."""
        checks = FileChecks(files)
        good = [k for k in range(len(files)) if checks.verdict(k) is None]
        self.val_skipped = checks.skipped()
        if not good:
            raise ValueError(
                f"{self.metadata}: every one of the {len(files)} validation clips failed its check"
            )
        return [files[k] for k in good], [labels[k] for k in good]

    @property
    def skipped_files(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every clip left out: validation clips at ``setup``,
        training clips when first read (in any loader worker)."""
        read = self.train_checks.skipped() if self.train_checks is not None else []
        return [*self.val_skipped, *read]

    def teardown(self, stage: str) -> None:
        """At the end of ``fit``: the skipped clips logged and listed."""
        if stage == "fit" and self.train_checks is not None and self.val_set is not None:
            total = len(self.train_checks) + len(self.val_skipped) + len(self.val_set.files)
            report_skipped(self, self.skipped_files, total)

    def _split(self) -> tuple[tuple[list[str], list[int]], tuple[list[str], list[int]]]:
        """Files and class ids of the training and the validation clips (split by group)."""
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
        return train, val

    def _dataset(
        self, files: list[str], labels: list[int], *, train: bool, checks: FileChecks
    ) -> Dataset[Any]:
        """The training or validation dataset (:attr:`dataset_type`) of ``files`` labeled
        ``labels``."""
        return self.dataset_type(
            files=files,
            labels=labels,
            frontend=self.frontend,
            frames=self.frames,
            checks=checks,
            **self._split_options(train),
        )

    def _split_options(self, train: bool) -> dict[str, Any]:
        """The dataset's other arguments for the training (or the validation) split:
        SpecAugment for training clips only."""
        return {"train": train, "specaugment": self.specaugment if train else None}

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

    dataset_type = EventSequenceDataset

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

    def _split_options(self, train: bool) -> dict[str, Any]:
        """The sequences' other arguments: an epoch's or the validation set's count."""
        return {
            "num_classes": self.num_classes,
            "max_events": self.max_events,
            "length": self.sequences_per_epoch if train else self.val_sequences,
        }
