"""Hostile audio through ``domainfm sed`` (API: ``load_audio``) and ``domainfm prepare audio``:
truncated, damaged, empty, silent, too short and oddly sampled WAV/FLAC/OGG/MP3 files, and
bad references and options."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from hostile_files import damage, empty, garbage, tone, truncate, wav_bytes, write_audio
from hostile_spec import Case, Ctx, Run, prepare_case, source_folder

from domainfm.domains.audio import load_audio

G = "audio"
PENDING_COMPRESSED = "compressed audio truncation / damage checks"
PENDING_SHORT = "clips shorter than the front end's window padded or refused"
PENDING_GUARD = "size guards before allocation (resampling)"


def _sed(make: Callable[[Ctx], Path | list[Path]], *extra: str, **run: Any) -> Callable[[Ctx], Run]:
    """``domainfm sed`` with the tiny SED model over the file(s) ``make`` writes (the first is
    the hostile one; API: ``load_audio`` of it at 16 kHz)."""

    def build(ctx: Ctx) -> Run:
        made = make(ctx)
        files = made if isinstance(made, list) else [made]
        out = ctx.root / "events.csv"
        run.setdefault("names", (files[0].name,))
        run.setdefault("api", lambda: load_audio(files[0], 16000))
        return Run(
            ["sed", str(ctx.models.audio_sed), str(out), *map(str, files), *extra],
            outputs=(out,),
            unchanged=tuple(f for f in files if f.is_file()),
            **run,
        )

    return build


def _audio(name: str, seconds: float = 3.0, rate: int = 16000) -> Callable[[Ctx], Path]:
    return lambda ctx: write_audio(ctx.path(name), seconds, rate)


def _then(make: Callable[[Ctx], Path], edit: Callable[[Path], Any]) -> Callable[[Ctx], Path]:
    def both(ctx: Ctx) -> Path:
        path = make(ctx)
        edit(path)
        return path

    return both


def _named(write: Callable[[Path], Path], name: str) -> Callable[[Ctx], Path]:
    return lambda ctx: write(ctx.path(name))


def _wav(name: str, samples: Callable[[], np.ndarray], rate: int = 16000, **kw: Any):
    def make(ctx: Ctx) -> Path:
        path = ctx.path(name)
        path.write_bytes(wav_bytes(samples(), rate, **kw))
        return path

    return make


def _with_nan(value: float) -> Callable[[], np.ndarray]:
    def make() -> np.ndarray:
        wave = tone(1.0, 16000)
        wave[100] = value
        return wave

    return make


ODD = os.fsdecode(b"cl\xefp \xff.wav")


def _format_cases() -> list[Case]:
    cases = []
    for ext in (".wav", ".flac", ".ogg", ".mp3"):
        kind = ext[1:]
        compressed = ext != ".wav"
        pending = PENDING_COMPRESSED if compressed else ""
        clip = _audio(f"clip{ext}", 6.0)
        cases += [
            Case(f"{kind}_good_detects", G, _sed(clip), code=0),
            Case(
                f"{kind}_truncated",
                G,
                _sed(_then(clip, lambda p: truncate(p, 0.4))),
                pending=pending,
            ),
            Case(f"{kind}_garbage", G, _sed(_named(garbage, f"noise{ext}"))),
            Case(f"{kind}_empty_file", G, _sed(_named(empty, f"empty{ext}"))),
        ]
        if compressed:
            cases.append(
                Case(
                    f"{kind}_damaged",
                    G,
                    _sed(_then(clip, lambda p: damage(p, 0.5, 400))),
                    pending=PENDING_COMPRESSED,
                )
            )
    return cases


def _wav_cases() -> list[Case]:
    silent = _wav("silent.wav", lambda: np.zeros(32000, np.float32))
    return [
        Case("wav_zero_frames", G, _sed(_wav("none.wav", lambda: np.zeros(0, np.float32)))),
        Case(
            "wav_declares_4gb_of_data",
            G,
            _sed(_wav("liar.wav", lambda: tone(0.5, 16000), declared=0xFFFFFFF0)),
        ),
        Case("wav_nan_samples", G, _sed(_wav("nan.wav", _with_nan(np.nan), bits=32))),
        Case("wav_inf_samples", G, _sed(_wav("inf.wav", _with_nan(np.inf), bits=32))),
        Case(
            "wav_silent_detects_nothing",
            G,
            _sed(silent, api_raises=True),
            code=0,
        ),
        Case(
            "wav_too_short_for_frontend",
            G,
            _sed(_wav("short.wav", lambda: tone(0.001, 16000)), api=None),
            code=(0, 2),
            pending=PENDING_SHORT,
        ),
        Case(
            "wav_one_sample",
            G,
            _sed(_wav("one.wav", lambda: np.full(1, 0.3, np.float32)), api=None),
            code=(0, 2),
            pending=PENDING_SHORT,
        ),
        Case("wav_other_rate_resampled", G, _sed(_audio("slow.wav", 2.0, 8000)), code=0),
        Case(
            "wav_one_hertz_rate",
            G,
            _sed(_wav("onehertz.wav", lambda: tone(1.0, 16000), rate=1)),
            pending=PENDING_GUARD,
        ),
        Case("wav_zero_rate", G, _sed(_wav("zerorate.wav", lambda: tone(0.5, 16000), rate=0))),
        Case("wav_is_a_folder", G, _sed(lambda ctx: ctx.path("folder.wav", "x").parent)),
        Case("wav_missing", G, _sed(lambda ctx: ctx.root / "absent.wav")),
        Case("wav_odd_name", G, _sed(lambda ctx: garbage(ctx.root / ODD))),
        Case(
            "wav_text_disguised",
            G,
            _sed(lambda ctx: _text(ctx.path("notes.wav"), "RIFF? no, a shopping list\n")),
        ),
        Case(
            "sed_good_then_truncated",
            G,
            _sed(
                lambda ctx: [
                    truncate(write_audio(ctx.path("cut.wav"), 6.0), 0.4),
                    write_audio(ctx.path("good.wav"), 2.0),
                ]
            ),
        ),
        Case(
            "sed_reference_missing",
            G,
            _sed(_audio("a.wav"), "--reference", "absent.csv", names=("absent.csv",), api=None),
        ),
        Case(
            "sed_reference_garbage",
            G,
            lambda ctx: _sed(
                _audio("a.wav"),
                "--reference",
                str(garbage(ctx.path("ref.csv"))),
                names=("ref.csv",),
                api=None,
            )(ctx),
        ),
    ]


def _text(path: Path, content: str) -> Path:
    path.write_text(content)
    return path


_prepare = prepare_case("audio", ("--segment-s", "1"))
_src = source_folder


def _good(src: Path) -> Any:
    return write_audio(src / "good.wav", 3.0)


def _prepare_cases() -> list[Case]:
    bad = (
        _good,
        lambda s: truncate(write_audio(s / "cut.wav", 3.0), 0.4),
        lambda s: (s / "silent.wav").write_bytes(wav_bytes(np.zeros(16000, np.float32), 16000)),
        lambda s: empty(s / "empty.flac"),
        lambda s: garbage(s / "noise.ogg"),
    )
    compressed = (
        _good,
        lambda s: truncate(write_audio(s / "cut.ogg", 6.0), 0.4),
        lambda s: truncate(write_audio(s / "cut.mp3", 6.0), 0.4),
    )
    return [
        Case(
            "prepare_audio_skips_bad",
            G,
            _prepare(_src(*bad), bad=("cut.wav", "silent.wav", "empty.flac", "noise.ogg")),
            code=0,
            slow=True,
        ),
        Case(
            "prepare_audio_skips_truncated_compressed",
            G,
            _prepare(_src(*compressed), bad=("cut.ogg", "cut.mp3")),
            code=0,
            slow=True,
            pending=PENDING_COMPRESSED,
        ),
        Case(
            "prepare_audio_rate_zero",
            G,
            _prepare(_src(_good), "--sample-rate", "0"),
            pattern="rate",
            slow=True,
        ),
        Case(
            "prepare_audio_segment_negative",
            G,
            _prepare(_src(_good), "--segment-s", "-1"),
            pattern="segment",
        ),
        Case(
            "prepare_audio_min_segment_nan",
            G,
            _prepare(_src(_good), "--min-segment-s", "nan"),
            pattern="segment",
        ),
    ]


CASES: list[Case] = [*_format_cases(), *_wav_cases(), *_prepare_cases()]
