"""Hostile checkpoints at every entry point that reads one (``inspect``, ``export``, ``segment``,
``detect``, ``sed``): malicious pickles (a marker payload must never run), truncated, empty,
foreign and edited checkpoints (missing tensors, unknown architectures, absurd widths, broken
input contracts and recipes)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hostile_files import (
    empty,
    evil_checkpoint,
    evil_raw_pickle,
    evil_zip_member,
    garbage,
    payload,
    truncate,
    write_audio,
    write_geotiff,
)
from hostile_spec import Case, Ctx, Run

from domainfm.domains.audio import load_sound_event_model
from domainfm.domains.plugin import recorded_domain
from domainfm.pretrained.export import export_checkpoint
from domainfm.pretrained.load import load_backbone
from domainfm.tasks.detection_module import load_detector
from domainfm.tasks.finetune_module import load_finetuned

G = "checkpoints"
PENDING_INSPECT = "inspect catches every failure"
PENDING_GUARD = "size guards before allocation (model build)"


def inspect_run(make: Callable[[Ctx], Path], **run: Any) -> Callable[[Ctx], Run]:
    """``domainfm inspect PATH`` (API: ``load_backbone``) on what ``make`` writes."""

    def build(ctx: Ctx) -> Run:
        path = make(ctx)
        return Run(
            ["inspect", str(path)], names=(path.name,), api=lambda: load_backbone(path), **run
        )

    return build


def _evil(
    how: str = "open", legacy: bool = False, name: str = "evil.ckpt"
) -> Callable[[Ctx], Path]:
    return lambda ctx: evil_checkpoint(ctx.path(name), ctx.marker, how=how, legacy=legacy)


def _model_and_contract(ckpt: Path, domain: str | None = None) -> object:
    """What ``segment`` reads of a checkpoint before any input: the model and its domain's
    typed input contract."""
    _, meta = load_finetuned(ckpt)
    return recorded_domain(meta, source=str(ckpt), domain=domain)


def _segment_with(
    make_ckpt: Callable[[Ctx], Path], loader: Callable[[Path], Any] = _model_and_contract
) -> Callable[[Ctx], Run]:
    """``domainfm segment CKPT good.nii.gz out.nii.gz`` with a hostile checkpoint."""

    def build(ctx: Ctx) -> Run:
        ckpt = make_ckpt(ctx)
        out = ctx.root / "seg.nii.gz"
        return Run(
            ["segment", str(ckpt), str(ctx.models.volume), str(out), "--no-progress"],
            names=(ckpt.name,),
            api=lambda: loader(ckpt),
            outputs=(out,),
            unchanged=(ckpt,),
        )

    return build


def _detect_with(make_ckpt: Callable[[Ctx], Path]) -> Callable[[Ctx], Run]:
    def build(ctx: Ctx) -> Run:
        ckpt = make_ckpt(ctx)
        raster = write_geotiff(ctx.path("scene.tif"))
        out = ctx.root / "boxes.geojson"
        return Run(
            ["detect", str(ckpt), str(raster), str(out), "--no-progress"],
            names=(ckpt.name,),
            api=lambda: load_detector(ckpt),
            outputs=(out,),
        )

    return build


def _sed_with(make_ckpt: Callable[[Ctx], Path]) -> Callable[[Ctx], Run]:
    def build(ctx: Ctx) -> Run:
        ckpt = make_ckpt(ctx)
        clip = write_audio(ctx.path("clip.wav"), 1.0)
        out = ctx.root / "events.csv"
        return Run(
            ["sed", str(ckpt), str(out), str(clip)],
            names=(ckpt.name,),
            api=lambda: load_sound_event_model(ckpt),
            outputs=(out,),
        )

    return build


def _export_with(make_ckpt: Callable[[Ctx], Path]) -> Callable[[Ctx], Run]:
    def build(ctx: Ctx) -> Run:
        ckpt = make_ckpt(ctx)
        out = ctx.root / "exported"
        return Run(
            ["export", str(ckpt), str(out)],
            names=(ckpt.name,),
            api=lambda: export_checkpoint(ckpt, ctx.root / "api_export"),
            outputs=(out / "model.safetensors", out / "config.json"),
        )

    return build


def _edited_ckpt(edit: Callable[[dict[str, Any]], None], name: str = "edited.ckpt"):
    """A copy of the medical segmentation checkpoint with ``edit`` applied to its dict."""

    def make(ctx: Ctx) -> Path:
        ckpt = torch.load(ctx.models.medical_seg, weights_only=True)
        edit(ckpt)
        path = ctx.path(name)
        torch.save(ckpt, path)
        return path

    return make


def _copy(attr: str, name: str) -> Callable[[Ctx], Path]:
    def make(ctx: Ctx) -> Path:
        return Path(shutil.copy(getattr(ctx.models, attr), ctx.path(name)))

    return make


def _meta(section: str, **changes: Any) -> Callable[[dict[str, Any]], None]:
    def edit(ckpt: dict[str, Any]) -> None:
        target = ckpt["domainfm"][section]
        if section == "recipe":
            target = target["finetune"]
        elif section == "backbone":
            target = target["kwargs"] if "architecture" not in changes else target
        target.update(changes)

    return edit


def _save(obj_of: Callable[[Ctx], Any], name: str) -> Callable[[Ctx], Path]:
    def make(ctx: Ctx) -> Path:
        path = ctx.path(name)
        torch.save(obj_of(ctx), path)
        return path

    return make


def export_copy(edit: Callable[[Path], object]) -> Callable[[Ctx], Path]:
    """A copy of the medical export folder with ``edit(folder)`` applied."""

    def make(ctx: Ctx) -> Path:
        folder = ctx.root / "export"
        shutil.copytree(ctx.models.export, folder)
        edit(folder)
        return folder

    return make


def _pickle_cases() -> list[Case]:
    evil = _evil()
    return [
        Case("pickle_inspect_ckpt", G, inspect_run(evil)),
        Case("pickle_inspect_os_system", G, inspect_run(_evil("system"))),
        Case("pickle_inspect_legacy_pt", G, inspect_run(_evil(legacy=True, name="evil.pt"))),
        Case(
            "pickle_inspect_raw_protocol2",
            G,
            inspect_run(lambda ctx: evil_raw_pickle(ctx.path("raw.ckpt"), ctx.marker)),
        ),
        Case(
            "pickle_inspect_raw_protocol0",
            G,
            inspect_run(lambda ctx: evil_raw_pickle(ctx.path("p0.ckpt"), ctx.marker, protocol=0)),
        ),
        Case(
            "pickle_inspect_zip_data_pkl",
            G,
            inspect_run(lambda ctx: evil_zip_member(ctx.path("zipped.ckpt"), ctx.marker)),
        ),
        Case(
            "pickle_inspect_in_state_dict",
            G,
            inspect_run(
                _save(lambda ctx: {"state_dict": {"backbone.w": payload(ctx.marker)}}, "s.ckpt")
            ),
        ),
        Case(
            "pickle_inspect_as_safetensors",
            G,
            inspect_run(
                lambda ctx: export_copy(
                    lambda f: evil_raw_pickle(f / "model.safetensors", ctx.marker)
                )(ctx)
            ),
        ),
        Case("pickle_export", G, _export_with(evil)),
        Case("pickle_segment", G, _segment_with(evil)),
        Case("pickle_detect", G, _detect_with(evil)),
        Case("pickle_sed", G, _sed_with(evil)),
    ]


def _corrupt_cases() -> list[Case]:
    def trunc(name: str) -> Callable[[Ctx], Path]:
        return lambda ctx: truncate(_copy("medical_seg", name)(ctx), 0.5)

    return [
        Case("ckpt_truncated_inspect", G, inspect_run(trunc("cut.ckpt"))),
        Case("ckpt_truncated_segment", G, _segment_with(trunc("cut.ckpt"))),
        Case("ckpt_truncated_export", G, _export_with(trunc("cut.ckpt"))),
        Case("ckpt_empty_inspect", G, inspect_run(lambda ctx: empty(ctx.path("empty.ckpt")))),
        Case("ckpt_empty_segment", G, _segment_with(lambda ctx: empty(ctx.path("empty.ckpt")))),
        Case("ckpt_garbage_inspect", G, inspect_run(lambda ctx: garbage(ctx.path("noise.ckpt")))),
        Case("ckpt_garbage_sed", G, _sed_with(lambda ctx: garbage(ctx.path("noise.ckpt")))),
        Case(
            "ckpt_is_folder_inspect",
            G,
            inspect_run(lambda ctx: ctx.path("folder.ckpt", "x").parent),
        ),
        Case("ckpt_missing_segment", G, _segment_with(lambda ctx: ctx.root / "absent.ckpt")),
        Case(
            "ckpt_no_domainfm_entry",
            G,
            inspect_run(
                _save(lambda ctx: {"state_dict": {"backbone.w": torch.zeros(2)}}, "bare.ckpt")
            ),
        ),
        Case("ckpt_a_list", G, inspect_run(_save(lambda ctx: [1, 2, 3], "list.ckpt"))),
        Case(
            "ckpt_no_backbone_weights_export",
            G,
            _export_with(_edited_ckpt(lambda c: c.update(state_dict={}), "nobackbone.ckpt")),
        ),
        Case("ckpt_detector_to_segment", G, _segment_with(_copy("geo_detect", "det.ckpt"))),
        Case("ckpt_segmenter_to_detect", G, _detect_with(_copy("geo_seg", "seg.ckpt"))),
        Case("ckpt_segmenter_to_sed", G, _sed_with(_copy("medical_seg", "seg.ckpt"))),
        Case(
            "ckpt_missing_tensor_segment",
            G,
            _segment_with(_edited_ckpt(lambda c: c["state_dict"].popitem(), "missing.ckpt")),
        ),
        Case(
            "ckpt_shape_mismatch_segment",
            G,
            _segment_with(
                _edited_ckpt(
                    lambda c: c["state_dict"].update({next(iter(c["state_dict"])): torch.zeros(3)}),
                    "shapes.ckpt",
                )
            ),
        ),
        Case(
            "ckpt_unknown_architecture_segment",
            G,
            _segment_with(_edited_ckpt(_meta("backbone", architecture="nope_net"), "arch.ckpt")),
        ),
        Case(
            "ckpt_unknown_kwarg_segment",
            G,
            _segment_with(_edited_ckpt(_meta("backbone", bogus=1), "kwarg.ckpt")),
        ),
        Case(
            "ckpt_absurd_width_segment",
            G,
            _segment_with(
                _edited_ckpt(_meta("backbone", embed_dim=2**20, num_heads=1), "wide.ckpt")
            ),
            pending=PENDING_GUARD,
        ),
        Case(
            "ckpt_unknown_contract_kind",
            G,
            _segment_with(_edited_ckpt(_meta("input", kind="martian"), "kind.ckpt")),
        ),
        Case(
            "ckpt_no_contract",
            G,
            _segment_with(
                _edited_ckpt(lambda c: c["domainfm"].update(input={}), "nocontract.ckpt")
            ),
        ),
        Case(
            "ckpt_contract_zero_spacing",
            G,
            _segment_with(_edited_ckpt(_meta("input", spacing_mm=0.0), "spacing0.ckpt")),
        ),
        Case(
            "ckpt_contract_nan_spacing",
            G,
            _segment_with(_edited_ckpt(_meta("input", spacing_mm=float("nan")), "nan.ckpt")),
        ),
        Case(
            "ckpt_recipe_one_class",
            G,
            _segment_with(_edited_ckpt(_meta("recipe", num_classes=1), "oneclass.ckpt")),
        ),
        Case(
            "ckpt_wrong_domain_flag",
            G,
            lambda ctx: _with_flag(
                _segment_with(
                    _copy("medical_seg", "ct.ckpt"), lambda c: _model_and_contract(c, "geospatial")
                )(ctx)
            ),
        ),
    ]


def _with_flag(run: Run) -> Run:
    assert run.argv is not None
    run.argv += ["--domain", "geospatial"]
    return run


CASES: list[Case] = [*_pickle_cases(), *_corrupt_cases()]
