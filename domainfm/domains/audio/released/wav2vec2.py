"""Released wav2vec 2.0 and HuBERT base weights (LibriSpeech 960 h, pretraining only),
loaded into :class:`~domainfm.domains.audio.wav2vec2_encoder.Wav2Vec2Encoder` (torchaudio's
``wav2vec2_model``), from torchaudio's files or fairseq's.

Layouts, and where each was verified:

* **torchaudio** (``torchaudio.pipelines.WAV2VEC2_BASE`` → ``wav2vec2_fairseq_base_ls960.
  pth``, ``HUBERT_BASE`` → ``hubert_fairseq_base_ls960.pth`` on download.pytorch.org):
  a flat ``Wav2Vec2Model`` state dict loaded with ``model.load_state_dict`` — torchaudio
  2.11 ``pipelines/_wav2vec2/impl.py`` (``Wav2Vec2Bundle.get_model``, ``_params``: the base
  architecture, identical for both, ``_normalize_waveform=False``, 16 kHz) and
  ``pipelines/_wav2vec2/utils.py::_get_state_dict`` (no wrapper; ``_remove_aux_axes`` only
  for ASR files). The positional convolution is weight-normalized: files written before
  torch's parametrization API hold ``encoder.transformer.pos_conv_embed.conv.weight_g`` /
  ``weight_v``; current torchaudio (``models/wav2vec2/components.py``,
  ``nn.utils.parametrizations.weight_norm(conv, dim=2)``) names them
  ``...conv.parametrizations.weight.original0`` / ``original1`` (torch renames them in a
  load hook, which a strict key map cannot rely on): both are accepted, mapped to the
  current names. An ASR head (``aux.*``) is dropped by name.
* **fairseq** (``wav2vec_small.pt``, ``hubert_base_ls960.pt`` on dl.fbaipublicfiles.com):
  ``{"args" | "cfg", "model": {...}, "optimizer_history", "extra_state", ...}``; the
  ``model`` keys are renamed as torchaudio's ``models/wav2vec2/utils/import_fairseq.py::
  _map_key`` does (``feature_extractor.conv_layers.N.0`` → ``...N.conv``, ``.0.2`` →
  ``.0.layer_norm`` (group norm), ``post_extract_proj`` / ``layer_norm`` →
  ``encoder.feature_projection.{projection,layer_norm}``, ``encoder.pos_conv.0`` →
  ``encoder.transformer.pos_conv_embed.conv``, ``encoder.layers.N.{self_attn.*_proj,
  self_attn_layer_norm, fc1, fc2, final_layer_norm}`` → ``encoder.transformer.layers.N.
  {attention.*_proj, layer_norm, feed_forward.intermediate_dense, feed_forward.output_dense,
  final_layer_norm}``, ``encoder.layer_norm`` → ``encoder.transformer.layer_norm``). The
  pretraining-only parts — wav2vec 2.0's ``quantizer.{vars, weight_proj.*}``,
  ``project_q.*``, ``final_proj.*``, ``mask_emb``; HuBERT's ``final_proj.*``,
  ``label_embs_concat``, ``mask_emb`` (fairseq ``models/wav2vec/wav2vec2.py``,
  ``models/hubert/hubert.py``, ``modules/gumbel_vector_quantizer.py``) — which
  ``_map_key`` silently skips, are dropped here by name and reported. Fairseq checkpoints
  that pickle OmegaConf objects are refused by the safe reader; re-save their ``"model"``.

The torchaudio files of wav2vec 2.0 and HuBERT have the same keys and shapes (the same
architecture): a file alone does not tell them apart; both entries build the same model.
The fairseq files differ (quantizer vs. label embeddings).

Input: raw 16 kHz mono waveform in [-1, 1], not normalized per clip for the base models
(fairseq ``task.normalize: false``; torchaudio ``_normalize_waveform=False``): the
``"waveform"`` front end (:mod:`~domainfm.domains.audio.waveform_frontend`). Pretraining
crops are 2–15.6 s (fairseq ``min/max_sample_size`` 32000 / 250000 in
``examples/wav2vec/config/pretraining/wav2vec2_base_librispeech.yaml`` and
``examples/hubert/config/pretrain/hubert_base_librispeech.yaml``). One token per 320
samples (20 ms).

Pretext head: none (contrastive quantizer / cluster prediction do not map onto MAE).
License: MIT (fairseq; torchaudio redistributes the weights under the same license).
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

from torch import Tensor

from domainfm.core.state_nesting import flat_state, nested_state
from domainfm.domains.audio.contract import AudioContract
from domainfm.domains.audio.wav2vec2_encoder import WAV2VEC2_BASE_CONFIG  # registers wav2vec2
from domainfm.domains.audio.waveform_frontend import WaveformFrontend
from domainfm.pretrained.registry import released_checkpoint

WAVEFORM_16K_INPUT = AudioContract.of(
    WaveformFrontend(sample_rate=16000, normalize=False, min_samples=400),
    frames=250000,  # samples: fairseq's max_sample_size crop
    extra={
        "model_input": "(B, 1, N) raw 16 kHz mono samples in [-1, 1], not normalized per clip",
        "token_hop_seconds": 0.02,
        "receptive_field_samples": 400,
        "training_crop_samples": [32000, 250000],
        "pooling": "mean over frames",
    },
)
"""Input contract of the base wav2vec 2.0 / HuBERT releases (see the module docstring)."""

_POS_CONV = "encoder.transformer.pos_conv_embed.conv."
_WEIGHT_NORM = {
    "weight_g": "parametrizations.weight.original0",
    "weight_v": "parametrizations.weight.original1",
}
_LICENSE = "MIT (fairseq; redistributed by torchaudio under the same license)"
_TORCHAUDIO = "https://download.pytorch.org/torchaudio/models/"
_FAIRSEQ = "https://dl.fbaipublicfiles.com/"


def _current_weight_norm(key: str) -> str:
    """Old ``weight_g``/``weight_v`` names of the positional conv → parametrization names."""
    if key.startswith(_POS_CONV):
        tail = key[len(_POS_CONV) :]
        if tail in _WEIGHT_NORM:
            return _POS_CONV + _WEIGHT_NORM[tail]
    return key


def torchaudio_wav2vec2_keys(content: Any) -> dict[str, Tensor]:
    """A torchaudio ``Wav2Vec2Model`` state dict → ours (the same names; old weight-norm
    names renamed). Every other key passes through (``aux.*`` is dropped by pattern)."""
    state = flat_state(content)
    if "model" in state:
        raise KeyError("a fairseq checkpoint ({'model': ...}): use the '-fairseq' entry")
    if not any(str(k).startswith("feature_extractor.conv_layers.") for k in state):
        raise KeyError(
            f"no 'feature_extractor.conv_layers.*' keys (not a torchaudio Wav2Vec2Model "
            f"state dict); found {list(state)[:4]}"
        )
    return {_current_weight_norm(str(k)): v for k, v in state.items()}


_FAIRSEQ_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), target)
    for pattern, target in (
        (
            r"feature_extractor\.conv_layers\.0\.2\.(weight|bias)$",
            r"feature_extractor.conv_layers.0.layer_norm.\1",
        ),
        (
            r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)$",
            r"feature_extractor.conv_layers.\1.conv.\2",
        ),
        (
            r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)$",
            r"feature_extractor.conv_layers.\1.layer_norm.\2",
        ),
        (r"post_extract_proj\.(weight|bias)$", r"encoder.feature_projection.projection.\1"),
        (r"layer_norm\.(weight|bias)$", r"encoder.feature_projection.layer_norm.\1"),
        (r"encoder\.pos_conv\.0\.bias$", _POS_CONV + "bias"),
        (r"encoder\.pos_conv\.0\.weight_g$", _POS_CONV + _WEIGHT_NORM["weight_g"]),
        (r"encoder\.pos_conv\.0\.weight_v$", _POS_CONV + _WEIGHT_NORM["weight_v"]),
        (r"encoder\.pos_conv\.0\.(parametrizations\.weight\.original[01])$", _POS_CONV + r"\1"),
        (r"encoder\.layer_norm\.(weight|bias)$", r"encoder.transformer.layer_norm.\1"),
        (
            r"encoder\.layers\.(\d+)\.self_attn\.((?:k|v|q|out)_proj\.(?:weight|bias))$",
            r"encoder.transformer.layers.\1.attention.\2",
        ),
        (
            r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)$",
            r"encoder.transformer.layers.\1.layer_norm.\2",
        ),
        (
            r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)$",
            r"encoder.transformer.layers.\1.feed_forward.intermediate_dense.\2",
        ),
        (
            r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)$",
            r"encoder.transformer.layers.\1.feed_forward.output_dense.\2",
        ),
        (
            r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)$",
            r"encoder.transformer.layers.\1.final_layer_norm.\2",
        ),
    )
)


def _fairseq_key(key: str) -> str:
    for pattern, target in _FAIRSEQ_RENAMES:
        if pattern.match(key):
            return pattern.sub(target, key)
    return key  # pretraining parts (dropped by pattern) or unforeseen keys (reported)


def fairseq_wav2vec2_keys(content: Any) -> dict[str, Tensor]:
    """``checkpoint["model"]`` of a fairseq wav2vec 2.0 / HuBERT file → our keys."""
    state = nested_state(content, "model")
    return {_fairseq_key(str(k)): v for k, v in state.items()}


_TA_LAYOUT = (
    "torchaudio Wav2Vec2Model state dict: feature_extractor.conv_layers.0-6.*, "
    "encoder.feature_projection.*, encoder.transformer.pos_conv_embed.conv.{bias, weight_g, "
    "weight_v | parametrizations.weight.original0/1}, encoder.transformer.layers.0-11.*, "
    "encoder.transformer.layer_norm.*"
)
_release = partial(
    released_checkpoint,
    architecture="wav2vec2",
    kwargs=dict(WAV2VEC2_BASE_CONFIG),
    input=WAVEFORM_16K_INPUT,
    license=_LICENSE,
)
for _name, _file, _pipeline in (
    ("wav2vec2-base", "wav2vec2_fairseq_base_ls960.pth", "WAV2VEC2_BASE"),
    ("hubert-base", "hubert_fairseq_base_ls960.pth", "HUBERT_BASE"),
):
    _release(
        name=_name,
        source_layout=f"{_TA_LAYOUT} ({_file}); aux.* dropped",
        reference=f"{_TORCHAUDIO}{_file} (torchaudio.pipelines.{_pipeline})",
        drop=("aux.*",),
    )(torchaudio_wav2vec2_keys)
for _name, _layout, _reference, _drop in (
    (
        "wav2vec2-base-fairseq",
        "fairseq wav2vec_small.pt: {'args', 'model': {feature_extractor.conv_layers."
        "N.0.weight, ...0.2.*, post_extract_proj.*, layer_norm.*, encoder.pos_conv.0.{bias, "
        "weight_g, weight_v}, encoder.layers.0-11.*, encoder.layer_norm.*, quantizer.{vars, "
        "weight_proj.*}, project_q.*, final_proj.*, mask_emb}, ...}; quantizer/projections dropped",
        f"{_FAIRSEQ}fairseq/wav2vec/wav2vec_small.pt (fairseq examples/wav2vec)",
        ("quantizer.*", "project_q.*", "final_proj.*", "mask_emb"),
    ),
    (
        "hubert-base-fairseq",
        "fairseq hubert_base_ls960.pt: {'cfg', 'model': {feature_extractor.*, "
        "post_extract_proj.*, layer_norm.*, encoder.pos_conv.0.*, encoder.layers.0-11.*, "
        "encoder.layer_norm.*, final_proj.*, label_embs_concat, mask_emb}, ...}; "
        "final_proj/label_embs_concat/mask_emb dropped",
        f"{_FAIRSEQ}hubert/hubert_base_ls960.pt (fairseq examples/hubert)",
        ("final_proj.*", "label_embs_concat", "mask_emb", "target_glu.*"),
    ),
):
    _release(name=_name, source_layout=_layout, reference=_reference, drop=_drop)(
        fairseq_wav2vec2_keys
    )
