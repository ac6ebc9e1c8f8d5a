"""The input contract of an audio model: sample rate, channels, front end with its
statistics, segment length.

Written by the audio data modules into checkpoints and exports (``"input"``) and read by the
HEAR wrapper, sound event detection and probes, which rebuild the exact front end of
training from it (:func:`checkpoint_frontend`: the front end an export or checkpoint
records, checked against a given one).

Example::

    >>> c = AudioContract(sample_rate=16000, frames=96,
    ...                   frontend={"architecture": "log_mel",
    ...                             "kwargs": {"sample_rate": 16000, "mean": -7.0, "std": 4.0}})
    >>> c.normalize(torch.zeros(1, 16000)).shape     # waveform -> normalized log-mel
    torch.Size([1, 64, 101])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from domainfm.core.contract import CONTRACTS, InputContract
from domainfm.core.registry import init_config
from domainfm.domains.audio.frontends import Frontend, build_frontend
from domainfm.pretrained.load import read_backbone_source


@CONTRACTS.register("audio")
@dataclass(frozen=True, kw_only=True)
class AudioContract(InputContract):
    """What an audio model expects.

    Attributes:
        sample_rate: the front end's input rate (Hz); other rates are resampled to it.
        frontend: the front end as recorded (``{"architecture", "kwargs"}``, statistics
            included).
        frames: frames per training segment (the model's time extent).
        channels: input channel names (mono).
        hop_seconds: time between frames (derived from the front end when not given).
    """

    kind: ClassVar[str] = "audio"
    legacy_keys: ClassVar[tuple[str, ...]] = ("frontend",)

    sample_rate: int
    frontend: dict[str, Any]
    frames: int
    channels: list[str] | None = None
    hop_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.channels is None:
            object.__setattr__(self, "channels", ["mono"])
        if self.hop_seconds is None:
            fe = self.frontend_module
            object.__setattr__(self, "hop_seconds", fe.hop_length / fe.sample_rate)

    @classmethod
    def of(cls, frontend: Frontend, frames: int, **kwargs: Any) -> AudioContract:
        """The contract of data cut into ``frames``-frame segments by ``frontend``."""
        return cls(
            sample_rate=frontend.sample_rate,
            frontend=init_config(frontend),
            frames=frames,
            **kwargs,
        )

    @cached_property
    def frontend_module(self) -> Frontend:
        """The recorded front end, rebuilt (once per contract)."""
        return build_frontend(self.frontend)

    def normalize(self, x: Tensor) -> Tensor:
        """``(..., N)`` mono waveform at :attr:`sample_rate` → normalized features
        ``(..., F, T)``, as the model saw in training."""
        out: Tensor = self.frontend_module(x)
        return out


def audio_contract(recorded: Mapping[str, Any] | None, *, source: str) -> AudioContract:
    """The :class:`AudioContract` a checkpoint or export records under ``"input"``.

    Raises:
        ValueError: naming ``source`` when it records no audio front end (not an audio model).
    """
    data = dict(recorded or {})
    if data.get("kind", AudioContract.kind) != AudioContract.kind or "frontend" not in data:
        raise ValueError(
            f"{source} records no audio front end (input: {sorted(data)}); export an audio "
            "pretraining run (its data module records the front end)"
        )
    try:
        return AudioContract.from_dict(data)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err


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
