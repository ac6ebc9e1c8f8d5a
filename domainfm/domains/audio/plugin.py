"""The audio domain plugin: ``domainfm prepare audio`` options and the ``domainfm sed``
command (sound event detection over files of any length, CSV out)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence

from domainfm.core.cli_args import (
    OneLineParser,
    fraction,
    non_negative_float,
    positive_float,
    positive_int,
)
from domainfm.data.shards import Preparer
from domainfm.domains.audio.benchmark_hooks import AudioBenchmark
from domainfm.domains.audio.contract import AudioContract
from domainfm.domains.audio.events import event_f1, read_events_csv, write_events_csv
from domainfm.domains.audio.frontends import build_frontend
from domainfm.domains.audio.sed_module import detect_events, load_sound_event_model
from domainfm.domains.audio.shards import AudioPreparer
from domainfm.domains.plugin import Command, DomainPlugin, check_output, register_domain


@register_domain
class AudioPlugin(DomainPlugin):
    """Recordings and labeled clips (WAV, FLAC, OGG, … through soundfile)."""

    name = "audio"
    summary = "recordings and labeled clips (WAV, FLAC, OGG …)"
    contract = AudioContract
    benchmark = AudioBenchmark()  # domainfm benchmark: its task formats and hooks

    def add_prepare_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--sample-rate", type=positive_int, default=16000, help="Hz")
        parser.add_argument("--frontend", choices=["log_mel", "kaldi_fbank"], default="log_mel")
        parser.add_argument(
            "--segment-s", type=positive_float, default=10.0, help="item length (s)"
        )
        parser.add_argument(
            "--min-segment-s", type=positive_float, default=0.5, help="shortest piece (s)"
        )
        parser.add_argument("--features", choices=["wave", "frontend"], default="wave")

    def preparer(self, args: argparse.Namespace) -> Preparer:
        frontend = build_frontend(
            {"architecture": args.frontend, "kwargs": {"sample_rate": args.sample_rate}}
        )
        return AudioPreparer(
            frontend=frontend,
            segment_s=args.segment_s,
            min_segment_s=args.min_segment_s,
            features=args.features,
        )

    def commands(self) -> Mapping[str, tuple[str, Command]]:
        return {"sed": ("sound event detection: audio files in, an events CSV out", sed_command)}


_SED_DESCRIPTION = (
    "Sound event detection with a SoundEventModule checkpoint: audio files of any length in, "
    "a CSV of file,onset,offset,label (seconds) out."
)

_DETECTION_OPTIONS: dict[str, tuple[Callable[[str], float], float, str]] = {
    "threshold": (fraction(), 0.5, "activity threshold [0, 1]"),
    "min_gap": (non_negative_float, 0.1, "gaps closed (s)"),
    "min_duration": (non_negative_float, 0.05, "shortest event (s)"),
}
"""``domainfm sed``'s options passed to :func:`~domainfm.domains.audio.sed_module.
detect_events` (its keyword → the option's type, default and help)."""


def sed_command(argv: Sequence[str]) -> int:
    """``domainfm sed CKPT OUT.csv FILES...``: events of a ``SoundEventModule`` checkpoint."""
    parser = OneLineParser(prog="domainfm sed", description=_SED_DESCRIPTION)
    parser.add_argument("ckpt", help="Lightning .ckpt of a SoundEventModule run")
    parser.add_argument("output", help="output CSV")
    parser.add_argument("files", nargs="+", help="audio files")
    for name, (kind, default, text) in _DETECTION_OPTIONS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=text)
    parser.add_argument("--reference", help="events CSV to score against (event F1)")
    parser.add_argument("--collar", type=non_negative_float, default=0.2, help="onset collar (s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    check_output(
        args.output, inputs=[args.ckpt, *args.files], suffixes=(".csv",), overwrite=args.overwrite
    )
    reference = read_events_csv(args.reference) if args.reference else None  # fail early
    module, meta = load_sound_event_model(args.ckpt)
    detection = {name: getattr(args, name) for name in _DETECTION_OPTIONS}
    events = detect_events(module, meta, args.files, **detection)
    out = write_events_csv(args.output, events)
    score = ""
    if reference is not None:
        wanted = {str(f) for f in args.files}
        reference = [e for e in reference if e.file in wanted]
        score = f", event F1 {event_f1(events, reference, collar=args.collar):.3f}"
    print(f"domainfm sed: wrote {out} ({len(events)} events in {len(args.files)} files{score})")
    return 0
