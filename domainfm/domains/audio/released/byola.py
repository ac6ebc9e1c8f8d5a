"""Released BYOL-A weights (AudioNTT2020), with the front end they need.

BYOL-A v1 (nttcslab/byol-a) ships ``pretrained_weights/AudioNTT2020-BYOLA-64x96d{512,1024,
2048}.pth``: a plain ``AudioNTT2020`` state dict — ``features.{0,4,8}.{weight,bias}`` (3×3
convs, ``(64, 1, 3, 3)`` then ``(64, 64, 3, 3)``), ``features.{1,5,9}.{weight,bias,
running_mean,running_var,num_batches_tracked}`` (BatchNorm), ``fc.0.{weight,bias}``
(``(d, 512)``) and ``fc.3.{weight,bias}`` (``(d, d)``). BYOL-A's own loader also accepts a
``{"state_dict": ...}`` wrapper and keys with a prefix before ``features.``/``fc.`` (e.g.
a training checkpoint's ``net.`` or ``online_encoder.net.``); so does this one. When several
encoders are present (BYOL's online and target networks), the online one is taken; any other
ambiguity is an error naming the prefixes. Nothing is left out silently: the training-only
parts (``target_encoder``, ``projector``, ``predictor``) are dropped by name and listed in
``report.dropped``; any other key is reported unexpected.

The weights expect BYOL-A's log-mel (:class:`~domainfm.domains.audio.frontends.
LogMelFrontend` defaults: 16 kHz, ``n_fft`` 1024, hop 160, 64 mels, 60–7800 Hz,
``log(x + eps)``) normalized with the **downstream dataset's** scalar mean/std (BYOL-A's
``evaluate.py`` computes them per task: :func:`~domainfm.domains.audio.frontends.
compute_frontend_stats`), and give a clip embedding as max + mean over time. License: the
weights are not redistributable (see the repository); tests build state dicts with the real
key names and shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from domainfm.domains.audio.contract import AudioContract
from domainfm.pretrained.registry import released_checkpoint

BYOLA_FRONTEND = {
    "architecture": "log_mel",
    "kwargs": {
        "sample_rate": 16000,
        "n_fft": 1024,
        "win_length": 1024,
        "hop_length": 160,
        "n_mels": 64,
        "f_min": 60.0,
        "f_max": 7800.0,
        "mean": None,
        "std": None,
    },
}
_BYOLA_INPUT = AudioContract(
    sample_rate=16000,
    frontend=BYOLA_FRONTEND,
    frames=96,  # 0.95 s at a 10 ms hop
    extra={
        "normalization": {
            "type": "dataset_mean_std",
            "note": "scalar mean/std of the log-mel over the downstream data (BYOL-A evaluate.py)",
        },
        "training_segment_seconds": 0.95,
        "pooling": "max + mean over time",
    },
)
_LAYOUT = (
    "BYOL-A AudioNTT2020 state dict: features.{0,4,8}.{weight,bias} (conv 3x3, 64 ch), "
    "features.{1,5,9}.* (BatchNorm2d), fc.0.* ({d}, 512), fc.3.* ({d}, {d}); optionally under "
    "'state_dict' and/or behind a prefix (net., online_encoder.net., ...)"
)
_LICENSE = "BYOL-A weights: NTT license, no redistribution (nttcslab/byol-a)"
_REFERENCE = (
    "https://github.com/nttcslab/byol-a/tree/master/pretrained_weights "
    "(AudioNTT2020-BYOLA-64x96d{d}.pth)"
)
_KEY = re.compile(r"(?:^|\.)((?:features|fc)\..*)$")


def _split_byola(content: Any) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(encoder keys without prefix, every other key as it is)`` of a BYOL-A file."""
    state = content
    if isinstance(content, Mapping) and isinstance(content.get("state_dict"), Mapping):
        state = content["state_dict"]
    if not isinstance(state, Mapping):
        raise TypeError(f"expected a state dict, found {type(state).__name__}")
    by_prefix: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        match = _KEY.search(key)
        if match is not None:
            by_prefix.setdefault(key[: match.start(1)], {})[match.group(1)] = value
    if not by_prefix:
        raise KeyError("no features.* / fc.* keys (not an AudioNTT2020 state dict)")
    prefix = next(iter(by_prefix))
    if len(by_prefix) > 1:
        online = [p for p in by_prefix if "online" in p]
        if len(online) != 1:
            raise KeyError(
                f"encoder keys under several prefixes {sorted(by_prefix)}; keep one encoder"
            )
        prefix = online[0]
    chosen = {prefix + k for k in by_prefix[prefix]}
    rest = {k: v for k, v in state.items() if k not in chosen}
    return by_prefix[prefix], rest


def byola_keys(content: Any) -> dict[str, Tensor]:
    """``features.*``/``fc.*`` of a BYOL-A file, unwrapped from ``state_dict`` and stripped of
    any prefix (see the module docstring): the encoder alone."""
    return _split_byola(content)[0]


def _map_byola(content: Any) -> dict[str, Tensor]:
    """The registered key map: the encoder's keys (:func:`byola_keys`) plus every other key
    of the file under its own name — a training checkpoint's target encoder, projector and
    predictor are dropped by name (``drop``), anything else is reported unexpected."""
    encoder, rest = _split_byola(content)
    return {**encoder, **rest}


BYOLA_TRAINING_PARTS = ("*target_encoder.*", "*projector.*", "*predictor.*")
"""BYOL's training-only parts (byol-pytorch names): the EMA target encoder, the online
projector and predictor; dropped by name when a training checkpoint is loaded."""

for _d in (512, 1024, 2048):
    released_checkpoint(
        name=f"byola-audiontt2020-d{_d}",
        architecture="audio_ntt2020",
        kwargs={"n_mels": 64, "d": _d},
        source_layout=_LAYOUT.replace("{d}", str(_d)),
        input=_BYOLA_INPUT,
        license=_LICENSE,
        reference=_REFERENCE.replace("{d}", str(_d)),
        drop=BYOLA_TRAINING_PARTS,
    )(_map_byola)
