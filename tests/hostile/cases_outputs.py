"""Hostile output paths for every command that writes: the output is the input (also through
links), exists, is a folder, sits in an unwritable folder or under a file, or has an
unsupported format. Each must be refused before any computation, naming the path, with the
input left byte-identical and nothing written."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from hostile_files import garbage, write_audio, write_geotiff
from hostile_spec import Case, Ctx, Run

G = "outputs"
FAST = 5.0
"""Seconds an output refusal may take (the checks come before any computation; the budget
covers loading the tiny model on a busy machine)."""

Target = Callable[[Ctx, Path], Path]
"""Where the output goes, given the case and its input: may create files, links, folders."""


def _same(ctx: Ctx, src: Path) -> Path:
    return src


def _symlink_to_input(ctx: Ctx, src: Path) -> Path:
    link = ctx.root / f"link_{src.name}"
    link.symlink_to(src)
    return link


def _hardlink_to_input(ctx: Ctx, src: Path) -> Path:
    link = ctx.root / f"hard_{src.name}"
    os.link(src, link)
    return link


def _existing(suffix: str) -> Target:
    def make(ctx: Ctx, src: Path) -> Path:
        return garbage(ctx.path(f"existing{suffix}"), 64)

    return make


def _symlink_to_other(suffix: str) -> Target:
    def make(ctx: Ctx, src: Path) -> Path:
        other = garbage(ctx.path(f"other{suffix}"), 64)
        link = ctx.root / f"points_elsewhere{suffix}"
        link.symlink_to(other)
        return link

    return make


def _folder(suffix: str) -> Target:
    return lambda ctx, src: ctx.path(f"folder{suffix}", "keep").parent


def _under_file(suffix: str) -> Target:
    return lambda ctx, src: garbage(ctx.path("notes.txt"), 16) / f"out{suffix}"


def _named(name: str) -> Target:
    return lambda ctx, src: ctx.root / name


def lock(ctx: Ctx, folder: Path) -> None:
    """Make ``folder`` unwritable, also for root (``chattr +i``: immutable); unlocked after
    the case. Raises ``OSError`` when neither works here."""
    if not ctx.is_root:
        folder.chmod(0o555)
        ctx.cleanups.append(lambda: folder.chmod(0o755))
        return
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
    if done.returncode != 0 or os.access(folder, os.W_OK):
        raise OSError(f"cannot make {folder} unwritable for root here: {done.stderr!r}")
    ctx.cleanups.append(lambda: subprocess.run(["chattr", "-i", str(folder)], check=False))


def _unwritable(suffix: str) -> Target:
    def make(ctx: Ctx, src: Path) -> Path:
        folder = ctx.path("locked", "x").parent
        lock(ctx, folder)
        return folder / f"out{suffix}"

    return make


def _nested(suffix: str) -> Target:
    return lambda ctx, src: ctx.root / "new" / "deeper" / f"out{suffix}"


def _run(argv: list[str], out: Path, inputs: tuple[Path, ...], *, keep: bool = True) -> Run:
    """The run of a writing command: ``inputs`` (and, with ``keep``, whatever the output
    path already holds) must stay byte-identical."""
    files = tuple(p for p in inputs if p.is_file())
    held = sorted(out.iterdir()) if out.is_dir() else [out]  # what an existing output holds
    known = {f.resolve() for f in files}
    extra = tuple(p for p in held if keep and p.is_file() and p.resolve() not in known)
    return Run(argv, names=(out.name,), outputs=(out,), unchanged=files + extra)


def _segment_medical(target: Target, *flags: str, keep: bool = True) -> Callable[[Ctx], Run]:
    def build(ctx: Ctx) -> Run:
        src = ctx.path("scan.nii.gz")
        src.write_bytes(ctx.models.volume.read_bytes())
        ckpt = ctx.models.medical_seg
        out = target(ctx, src)
        argv = ["segment", str(ckpt), str(src), str(out), "--no-progress", *flags]
        return _run(argv, out, (src, ckpt), keep=keep)

    return build


def _segment_geo(target: Target, *flags: str, keep: bool = True) -> Callable[[Ctx], Run]:
    def build(ctx: Ctx) -> Run:
        src = write_geotiff(ctx.path("scene.tif"))
        out = target(ctx, src)
        argv = ["segment", str(ctx.models.geo_seg), str(src), str(out), "--no-progress", *flags]
        return _run(argv, out, (src,), keep=keep)

    return build


def _detect(target: Target, *flags: str, keep: bool = True) -> Callable[[Ctx], Run]:
    def build(ctx: Ctx) -> Run:
        src = write_geotiff(ctx.path("scene.tif"))
        out = target(ctx, src)
        argv = ["detect", str(ctx.models.geo_detect), str(src), str(out), "--no-progress", *flags]
        return _run(argv, out, (src,), keep=keep)

    return build


def _sed(target: Target, *flags: str, keep: bool = True) -> Callable[[Ctx], Run]:
    def build(ctx: Ctx) -> Run:
        src = write_audio(ctx.path("clip.wav"), 1.0)
        out = target(ctx, src)
        return _run(
            ["sed", str(ctx.models.audio_sed), str(out), str(src), *flags],
            out,
            (src,),
            keep=keep,
        )

    return build


def _export(target: Target, *, keep: bool = True) -> Callable[[Ctx], Run]:
    def build(ctx: Ctx) -> Run:
        ckpt = ctx.path("model.ckpt")
        ckpt.write_bytes(ctx.models.medical_seg.read_bytes())
        out = target(ctx, ckpt)
        return _run(["export", str(ckpt), str(out)], out, (ckpt,), keep=keep)

    return build


def _existing_export(ctx: Ctx, src: Path) -> Path:
    folder = ctx.path("exported", "config.json").parent
    (folder / "config.json").write_text('{"format": "mine"}')
    (folder / "model.safetensors").write_bytes(b"precious")
    return folder


def _sed_over_reference(ctx: Ctx) -> Run:
    src = write_audio(ctx.path("clip.wav"), 1.0)
    ref = ctx.path("reference.csv")
    ref.write_text(f"file,onset,offset,label\n{src},0.1,0.5,a\n")
    argv = ["sed", str(ctx.models.audio_sed), str(ref), str(src), "--reference", str(ref)]
    return Run(argv, names=(ref.name,), outputs=(ref,), unchanged=(ref, src))


def _prepare_into_src(ctx: Ctx) -> Run:
    src = ctx.path("raw", "good.wav").parent
    write_audio(src / "good.wav", 2.0)
    argv = ["prepare", "audio", str(src), str(src), "--num-workers", "1"]
    return Run(argv, names=("raw",), unchanged=(src / "good.wav",))


def _prepare_locked(ctx: Ctx) -> Run:
    src = ctx.path("raw", "good.wav").parent
    write_audio(src / "good.wav", 2.0)
    out = _unwritable("")(ctx, src)
    run = _run(["prepare", "audio", str(src), str(out), "--num-workers", "1"], out, ())
    run.outputs = ()
    return run


def _all(
    command: str, make: Callable[..., Callable[[Ctx], Run]], suffix: str, bad: str
) -> list[Case]:
    """The output cases every writing command shares."""
    tag = f"{command}_out"
    return [
        Case(f"{tag}_is_the_input", G, make(_same), max_seconds=FAST),
        Case(f"{tag}_symlink_to_input", G, make(_symlink_to_input), max_seconds=FAST),
        Case(f"{tag}_exists", G, make(_existing(suffix)), max_seconds=FAST),
        Case(f"{tag}_symlink_to_other_file", G, make(_symlink_to_other(suffix)), max_seconds=FAST),
        Case(f"{tag}_is_a_folder", G, make(_folder(suffix)), max_seconds=FAST),
        Case(f"{tag}_under_a_file", G, make(_under_file(suffix)), max_seconds=FAST),
        Case(f"{tag}_unsupported_format", G, make(_named(f"out{bad}")), max_seconds=FAST),
        Case(f"{tag}_unwritable_folder", G, make(_unwritable(suffix)), max_seconds=FAST),
    ]


def _cases() -> list[Case]:
    return [
        *_all("segment_medical", _segment_medical, ".nii.gz", ".png"),
        Case(
            "segment_medical_out_hardlink_to_input",
            G,
            _segment_medical(_hardlink_to_input),
            max_seconds=FAST,
        ),
        Case(
            "segment_medical_out_is_the_checkpoint",
            G,
            _segment_medical(lambda ctx, src: ctx.models.medical_seg),
        ),
        Case("segment_medical_out_no_extension", G, _segment_medical(_named("labels"))),
        Case(
            "segment_medical_out_exists_overwrite",
            G,
            _segment_medical(_existing(".nii.gz"), "--overwrite", keep=False),
            code=0,
        ),
        Case(
            "segment_medical_out_new_nested_folder", G, _segment_medical(_nested(".nii.gz")), code=0
        ),
        *_all("segment_geo", _segment_geo, ".tif", ".png"),
        *_all("detect", _detect, ".geojson", ".tif"),
        *_all("sed", _sed, ".csv", ".txt"),
        Case("sed_out_is_the_reference", G, _sed_over_reference, max_seconds=FAST),
        Case("export_out_is_a_file", G, _export(_existing("")), max_seconds=FAST),
        Case("export_out_is_the_checkpoint", G, _export(_same), max_seconds=FAST),
        Case("export_out_unwritable_folder", G, _export(_unwritable(""))),
        Case("export_out_holds_an_export", G, _export(_existing_export)),
        # shards beside the raw files: not data loss (the sources stay), so either is fine
        Case("prepare_out_is_the_source", G, _prepare_into_src, code=(0, 2), slow=True),
        Case("prepare_out_unwritable_folder", G, _prepare_locked),
    ]


CASES: list[Case] = _cases()
