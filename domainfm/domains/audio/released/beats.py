"""Released BEATs weights (microsoft/unilm), mapped onto
:class:`~domainfm.domains.audio.beats_encoder.BEATsEncoder`, with BEATs' own fbank.

Layout, read in microsoft/unilm ``beats/README.md`` ("Load Pre-Trained Models" /
"Load Fine-tuned Models"), ``beats/BEATs.py`` (``BEATsConfig``, ``BEATs``) and
``beats/backbone.py`` (``TransformerEncoder``, ``MultiheadAttention``): a torch file
``{"cfg": {...}, "model": state_dict}`` (fine-tuned files add ``"label_dict"``) that upstream
loads with ``BEATs(BEATsConfig(checkpoint["cfg"])).load_state_dict(checkpoint["model"])``.
The state dict holds ``patch_embedding.weight`` ``(512, 1, 16, 16)`` (no bias),
``layer_norm.*`` ``(512,)``, ``post_extract_proj.*`` ``(768, 512)``,
``encoder.pos_conv.0.{bias, weight_g (1, 1, 128), weight_v (768, 48, 128)}`` (the old
``nn.utils.weight_norm`` over dim 2), per layer ``encoder.layers.N.self_attn.{q,k,v,out}_proj.*``,
``self_attn.relative_attention_bias.weight`` ``(320, 12)`` (one table shared by all layers,
saved under every layer), ``self_attn.grep_linear.*`` ``(8, 64)``, ``self_attn.grep_a``
``(1, 12, 1, 1)``, ``self_attn_layer_norm.*``, ``fc1.*`` ``(3072, 768)``, ``fc2.*``,
``final_layer_norm.*``, and ``encoder.layer_norm.*``; a fine-tuned file adds the AudioSet
classifier ``predictor.{weight (527, 768), bias}``, dropped by name.

**The architecture comes from the file's ``cfg``, never from defaults** (avex PR #162: a
model built from a default config loads silently mismatched): the key map reads ``cfg`` over
``BEATsConfig``'s own defaults (:data:`BEATS_CONFIG_DEFAULTS`, what upstream applies) and
refuses a file whose architecture field differs from the release's registered kwargs, naming
the field. The iter3 / iter3+ values (:data:`~domainfm.domains.audio.beats_encoder.
BEATS_ITER3_ARCH`: 12 post-LN DeepNorm layers of width 768, 12 heads, 320 buckets up to
distance 800, gated relative position bias, conv position embedding 128 / 16 groups, 16×16
patches into 512) are those of the released ``cfg`` as dumped by third-party reproductions;
no release file was downloaded here. The only renaming is ``pos_conv.0.weight_g`` /
``weight_v`` → torch's current ``parametrizations.weight.original0`` / ``original1``.

Input: BEATs' fbank (:class:`~domainfm.domains.audio.release_frontends.BEATsFbankFrontend`:
16 kHz, waveform × 2**15, Kaldi fbank 128 mel, 25/10 ms, Povey window, normalized
``(x - 15.41663) / (2 * 6.55582)``, ``BEATs.preprocess``), 10 s AudioSet clips (998 frames,
of which the 16-frame patches use 992); clip embedding: mean over tokens.

Example::

    >>> model, report = load_released("beats-iter3", "BEATs_iter3.pt")
    >>> contract = RELEASED.get("beats-iter3").contract
    >>> emb = model(contract.normalize(waveform_16k)[:, None])      # (B, 768)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from domainfm.domains.audio.beats_encoder import BEATS_ITER3_ARCH
from domainfm.domains.audio.contract import AudioContract
from domainfm.domains.audio.release_frontends import (
    BEATS_FBANK_MEAN,
    BEATS_FBANK_STD,
    BEATsFbankFrontend,
)
from domainfm.pretrained.registry import released_checkpoint

BEATS_CONFIG_DEFAULTS: dict[str, Any] = {
    **BEATS_ITER3_ARCH,  # the sizes; BEATsConfig() differs from iter3 in these fields:
    "input_patch_size": -1,
    "deep_norm": False,
    "relative_position_embedding": False,
    "max_distance": 1280,
    "gru_rel_pos": False,
    "finetuned_model": False,
    "predictor_class": 527,
}
"""``BEATsConfig()``'s defaults for the fields that shape the model: a ``cfg`` overrides
them (``BEATsConfig.update``), so a field absent from a file's ``cfg`` takes this value."""

BEATS_INPUT = AudioContract.of(
    BEATsFbankFrontend(mean=BEATS_FBANK_MEAN, std=BEATS_FBANK_STD),
    frames=998,  # a 10 s AudioSet clip: 1 + (160000 - 400) // 160 Kaldi frames
    extra={
        "training_segment_seconds": 10.0,
        "patch_frames_used": 992,
        "pooling": "mean over tokens",
    },
)
_LICENSE = "MIT (microsoft/unilm BEATs code and weights)"
_README = "https://github.com/microsoft/unilm/tree/master/beats"
_WEIGHT_NORM = {
    "encoder.pos_conv.0.weight_g": "encoder.pos_conv.0.parametrizations.weight.original0",
    "encoder.pos_conv.0.weight_v": "encoder.pos_conv.0.parametrizations.weight.original1",
}


def beats_file_config(content: Any) -> dict[str, Any]:
    """The effective ``cfg`` of a BEATs file: its ``cfg`` over :data:`BEATS_CONFIG_DEFAULTS`.

    Raises:
        KeyError: the content is not ``{"cfg": {...}, "model": {...}}``.
    """
    if not isinstance(content, Mapping) or not {"cfg", "model"} <= set(content):
        found = list(content)[:6] if isinstance(content, Mapping) else type(content).__name__
        raise KeyError(f"expected a BEATs file {{'cfg', 'model'}}, found {found}")
    cfg = content["cfg"]
    if not isinstance(cfg, Mapping):
        raise TypeError(f"BEATs 'cfg' must be a dict, found {type(cfg).__name__}")
    return {**BEATS_CONFIG_DEFAULTS, **cfg}


def beats_key_map(
    arch: Mapping[str, Any], *, finetuned: bool
) -> Callable[[Any], dict[str, Tensor]]:
    """The key map of a BEATs release built as ``arch`` (its registered kwargs): checks the
    file's ``cfg`` field by field, then passes every key through (only the weight-norm
    names renamed)."""

    def map_keys(content: Any) -> dict[str, Tensor]:
        cfg = beats_file_config(content)
        expected = {**arch, "finetuned_model": finetuned}
        differ = {k: (cfg[k], v) for k, v in expected.items() if cfg[k] != v}
        if differ:
            fields = ", ".join(f"{k}={a!r} (release: {b!r})" for k, (a, b) in differ.items())
            raise KeyError(f"cfg of another BEATs architecture: {fields}")
        state = content["model"]
        if not isinstance(state, Mapping):
            raise TypeError(f"BEATs 'model' must be a state dict, found {type(state).__name__}")
        return {str(_WEIGHT_NORM.get(k, k)): v for k, v in state.items()}

    return map_keys


_LAYOUT = (
    "BEATs file {{'cfg': {{...}}, 'model': state_dict}}: patch_embedding.weight (512, 1, 16, 16), "
    "layer_norm.*, post_extract_proj.*, encoder.pos_conv.0.{{bias, weight_g, weight_v}}, "
    "encoder.layers.N.self_attn.{{q,k,v,out}}_proj.*, .relative_attention_bias.weight (320, 12), "
    ".grep_linear.*, .grep_a, self_attn_layer_norm.*, fc1.*, fc2.*, final_layer_norm.*, "
    "encoder.layer_norm.*{extra}; cfg checked against the release's architecture"
)

# (name, file, fine-tuned): iter3 and iter3+ share the architecture and the key layout
for _name, _file, _finetuned in (
    ("beats-iter3", "BEATs_iter3.pt, pre-trained on AudioSet-2M, iteration 3", False),
    (
        "beats-iter3-plus-as2m",
        "BEATs_iter3_plus_AS2M.pt, iteration 3+ with the AS2M tokenizer",
        False,
    ),
    ("beats-iter3-as2m-finetuned", "BEATs_iter3_finetuned_on_AS2M_cpt{1,2}.pt", True),
):
    released_checkpoint(
        name=_name,
        architecture="beats",
        kwargs=BEATS_ITER3_ARCH,
        source_layout=_LAYOUT.format(
            extra=", predictor.* (AudioSet classifier, dropped)" if _finetuned else ""
        ),
        input=BEATS_INPUT,
        license=_LICENSE,
        reference=f"{_README} ({_file})",
        drop=("predictor.*",) if _finetuned else (),
    )(beats_key_map(BEATS_ITER3_ARCH, finetuned=_finetuned))
