"""Hostile checkpoints and data files reaching ``domainfm fit``: ``--ckpt_path``,
``pretrained=`` and ``frontend_from=`` that are malicious, missing, corrupt or another
model's, and bad audio files in the file-based training path (skipped by name, or a named
refusal when nothing is left)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cases_configs import FIT_RECORDS, PENDING_CLI
from hostile_files import (
    ct_volume,
    evil_checkpoint,
    garbage,
    nifti_image,
    truncate,
    wav_bytes,
    write_audio,
)
from hostile_spec import Case, Ctx, Run

G = "configs"
PENDING_UNION = "pretrained=/frontend_from= refusals not ending in 'Union subtypes'"
PENDING_AUDIO = "file-based audio training validates, skips and counts bad files"


FINETUNE = """\
seed_everything: 0
trainer: {{max_steps: 1, accelerator: cpu, logger: false,
          enable_progress_bar: false, default_root_dir: {root}}}
model:
  class_path: domainfm.tasks.finetune_module.FinetuneModule
  init_args: {{task: segmentation, num_classes: 2, pretrained: {pretrained}}}
data:
  class_path: domainfm.domains.medical3d.VolumeSegDataModule
  init_args:
    images: [{image}]
    labels: [{label}]
    crop_size: 16
    spacing: 2.0
    samples_per_volume: 2
    batch_size: 2
    num_workers: 0
"""


AUDIO = """\
seed_everything: 0
trainer: {{max_steps: 1, accelerator: cpu, logger: false,
          enable_progress_bar: false, default_root_dir: {root}}}
model:
  class_path: domainfm.tasks.pretrain_module.PretrainModule
  init_args:
    domain: audio
    backbone:
      class_path: domainfm.core.vit.VisionTransformerND
      init_args: {{in_chans: 1, spatial_dims: 2, patch_size: 16, embed_dim: 16, depth: 1,
                   num_heads: 2}}
    objectives:
      mae:
        class_path: domainfm.core.objectives.mae.MAE
        init_args: {{decoder_dim: 16, decoder_depth: 1, decoder_heads: 2}}
data:
{data}
"""


AUDIO_FILES = """\
  class_path: domainfm.domains.audio.AudioPretrainDataModule
  init_args:
    files: [{files}]
    frames: 96
    masking: {{ratio: 0.5, patch_size: 16}}
    samples_per_epoch: 4
    batch_size: 2
    num_workers: 0
"""


AUDIO_CLIPS = """\
  class_path: domainfm.domains.audio.AudioClipDataModule
  init_args: {{metadata: {root}/meta.csv, val_groups: [a], frontend_from: {frontend_from},
               frames: 96, batch_size: 2, num_workers: 0}}
"""


def _ckpt_path(make: Callable[[Ctx], Path], **kw: Any) -> Callable[[Ctx], Run]:
    """``fit --config fit.yaml --ckpt_path CKPT``."""

    def build(ctx: Ctx) -> Run:
        ckpt = make(ctx)
        config = ctx.models.fit_config(ctx.root)
        argv = ["fit", "--config", str(config), "--ckpt_path", str(ckpt)]
        unchanged = (ckpt,) if ckpt.is_file() else ()
        return Run(argv, names=(ckpt.name,), unchanged=unchanged, allowed_new=FIT_RECORDS, **kw)

    return build


def _finetune(make_pretrained: Callable[[Ctx], Path]) -> Callable[[Ctx], Run]:
    def build(ctx: Ctx) -> Run:
        pretrained = make_pretrained(ctx)
        image = nifti_image(ctx.path("image.nii.gz"), ct_volume())
        label = nifti_image(ctx.path("label.nii.gz"), (ct_volume() > 0).astype("uint8"))
        config = ctx.path("finetune.yaml")
        config.write_text(
            FINETUNE.format(root=ctx.root, pretrained=pretrained, image=image, label=label)
        )
        return Run(
            ["fit", "--config", str(config)],
            names=(pretrained.name,),
            allowed_new=FIT_RECORDS,
        )

    return build


def _audio_fit(make_files: Callable[[Ctx], list[Path]], names: int = 0) -> Callable[[Ctx], Run]:
    """One-step audio MAE on the files ``make_files`` writes; the first ``names`` of them
    are bad and must be named (a logged skip)."""

    def build(ctx: Ctx) -> Run:
        files = make_files(ctx)
        data = AUDIO_FILES.format(files=", ".join(str(f) for f in files))
        config = ctx.path("audio.yaml")
        config.write_text(AUDIO.format(root=ctx.root, data=data))
        return Run(
            ["fit", "--config", str(config)],
            names=tuple(f.name for f in files[:names]),
            mentions=tuple(f.name for f in files[:names]),
            allowed_new=(*FIT_RECORDS, "*.json"),
        )

    return build


def _frontend_from(make: Callable[[Ctx], Path]) -> Callable[[Ctx], Run]:
    def build(ctx: Ctx) -> Run:
        source = make(ctx)
        data = AUDIO_CLIPS.format(root=ctx.root, frontend_from=source)
        config = ctx.path("probe.yaml")
        config.write_text(AUDIO.format(root=ctx.root, data=data))
        return Run(["fit", "--config", str(config)], names=(source.name,), allowed_new=FIT_RECORDS)

    return build


def _evil(ctx: Ctx) -> Path:
    return evil_checkpoint(ctx.path("evil.ckpt"), ctx.marker)


def _checkpoint_cases() -> list[Case]:
    def cut(ctx: Ctx) -> Path:
        path = ctx.path("cut.ckpt")
        path.write_bytes(ctx.models.medical_seg.read_bytes())
        return truncate(path, 0.5)

    def other_model(ctx: Ctx) -> Path:
        path = ctx.path("segmenter.ckpt")
        path.write_bytes(ctx.models.medical_seg.read_bytes())
        return path

    return [
        Case("ckpt_path_evil", G, _ckpt_path(_evil), pending=PENDING_CLI),
        Case("ckpt_path_truncated", G, _ckpt_path(cut), pending=PENDING_CLI),
        Case(
            "ckpt_path_garbage",
            G,
            _ckpt_path(lambda ctx: garbage(ctx.path("noise.ckpt"))),
            pending=PENDING_CLI,
        ),
        Case("ckpt_path_missing", G, _ckpt_path(lambda ctx: ctx.root / "absent.ckpt")),
        Case("ckpt_path_is_folder", G, _ckpt_path(lambda ctx: ctx.path("dir.ckpt", "x").parent)),
        Case("ckpt_path_other_model", G, _ckpt_path(other_model), pending=PENDING_CLI),
        Case("pretrained_evil", G, _finetune(_evil), pending=PENDING_UNION),
        Case(
            "pretrained_missing",
            G,
            _finetune(lambda ctx: ctx.root / "absent_export"),
            pending=PENDING_UNION,
        ),
        Case(
            "pretrained_garbage",
            G,
            _finetune(lambda ctx: garbage(ctx.path("noise.ckpt"))),
            pending=PENDING_UNION,
        ),
        Case("pretrained_export_trains", G, _finetune(lambda ctx: ctx.models.export), code=0),
        Case("frontend_from_evil", G, _frontend_from(_evil), pending=PENDING_UNION),
        Case(
            "frontend_from_not_audio",
            G,
            _frontend_from(lambda ctx: ctx.models.export),
            pending=PENDING_UNION,
        ),
    ]


def _audio_cases() -> list[Case]:
    def good(ctx: Ctx) -> list[Path]:
        return [write_audio(ctx.path("good.wav"), 2.0)]

    def with_bad(bad: Callable[[Ctx], Path]) -> Callable[[Ctx], list[Path]]:
        return lambda ctx: [bad(ctx), *good(ctx)]

    def cut_ogg(ctx: Ctx) -> Path:
        return truncate(write_audio(ctx.path("cut.ogg"), 6.0), 0.4)

    def cut_wav(ctx: Ctx) -> Path:
        return truncate(write_audio(ctx.path("cut.wav"), 6.0), 0.4)

    def silent(ctx: Ctx) -> Path:
        path = ctx.path("silent.wav")
        path.write_bytes(wav_bytes(np.zeros(32000, "float32"), 16000))
        return path

    return [
        Case("audio_fit_good_files_train", G, _audio_fit(good), code=0),
        Case(
            "audio_fit_truncated_wav_skipped",
            G,
            _audio_fit(with_bad(cut_wav), 1),
            code=0,
            pending=PENDING_AUDIO,
        ),
        Case(
            "audio_fit_truncated_ogg_skipped",
            G,
            _audio_fit(with_bad(cut_ogg), 1),
            code=0,
            pending=PENDING_AUDIO,
        ),
        Case(
            "audio_fit_silent_skipped",
            G,
            _audio_fit(with_bad(silent), 1),
            code=0,
            pending=PENDING_AUDIO,
        ),
        Case("audio_fit_only_bad_files", G, _audio_fit(lambda ctx: [cut_wav(ctx)], 1)),
    ]


CASES: list[Case] = [*_checkpoint_cases(), *_audio_cases()]
