"""Released SuPreM weights (Li et al., "How Well Do Supervised 3D Models Transfer to Medical
Imaging Tasks?", ICLR 2024, arXiv:2501.11253 / AbdomenAtlas 1.1, 2100 annotated CT), mapped
onto our Swin UNETR and SegResNet encoders.

Read upstream (MrGiovanni/SuPreM):

* ``supervised_pretraining/train.py``: the checkpoint is ``{"net": model.state_dict(),
  "optimizer", "scheduler", "epoch"}`` of the DDP-wrapped model (``module.`` prefix). For
  ``--backbone swinunetr`` the model is ``backbone/Universal_model.py``'s
  ``Universal_model``: ``backbone`` (``backbone/swinunetr.py``, a copy of MONAI 0.9's
  ``SwinUNETR``, ``feature_size=48``, no ``out`` block) plus the CLIP-driven heads
  ``precls_conv``, ``GAP``, ``controller``, ``organ_embedding`` (an ``nn.Embedding`` or, with
  word embeddings, a buffer and ``text_to_vision``). For ``--backbone segresnet`` it is MONAI's
  ``SegResNet(blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1], init_filters=16)`` itself.
  Transforms: RAS, 1.5 mm, -175..250 HU → [0, 1], 96³ crops.
* ``target_applications/totalsegmentator/train.py``: the fine-tuning loader of each release
  (``['net']``; Swin UNETR: keys ``module.backbone.<SwinUNETR key>``; SegResNet: keys
  ``module.<SegResNet key>``, the final ``conv_final.2.conv`` skipped) — both copy whatever
  matches into the model, so a mismatch loads nothing silently.

Swin UNETR: ``module.backbone.swinViT.*`` → ``swinViT.*`` of
:class:`~domainfm.domains.medical3d.swin_legacy.SwinViT3DLegacy` (SuPreM's copied
``PatchMerging`` has MONAI < 1.5's concatenation order). Dropped by name: the Swin UNETR
decoder (``backbone.encoder*``, ``backbone.decoder*``) and the Universal-model heads.

SegResNet: MONAI ``SegResNet``'s encoder (``convInit``, ``down_layers``) → MONAI
``SegResEncoder`` keys of :class:`~domainfm.domains.medical3d.cnn.SegResNetEncoder3D` — the
same computation (a level's stride-2 conv opens ``down_layers[i]`` but closes
``layers[i-1]`` as ``downsample``); dropped by name: the decoder ``up_layers``,
``up_samples``, ``conv_final``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial
from typing import Any

from torch import Tensor

from domainfm.domains.medical3d import swin_legacy  # noqa: F401  (registers the backbone)
from domainfm.domains.medical3d.released.abdominal_ct import abdominal_ct_input
from domainfm.domains.medical3d.released.nesting import require_mapping, unwrap
from domainfm.domains.medical3d.released.swin_unetr import SWIN_UNETR_KWARGS
from domainfm.pretrained.registry import released_checkpoint

SUPREM_INPUT = abdominal_ct_input(spacing_mm=[1.5, 1.5, 1.5], crop_size=[96, 96, 96])

_release = partial(
    released_checkpoint,
    input=SUPREM_INPUT,
    license="CC BY-NC-ND 4.0 (The Johns Hopkins University; MrGiovanni/SuPreM)",
)


def _net(content: Any) -> Mapping[str, Tensor]:
    """The ``net`` state dict of a SuPreM checkpoint."""
    return require_mapping(unwrap(content, "net"), "'net' to be a dict")


SWIN_DROP = (
    "backbone.encoder*",
    "backbone.decoder*",
    "precls_conv.*",
    "GAP.*",
    "controller.*",
    "organ_embedding*",
    "text_to_vision.*",
)
"""Swin UNETR's decoder side and the Universal model's CLIP-driven heads."""


@_release(
    name="suprem-swinunetr",
    architecture="swin_vit_3d_legacy",
    kwargs={**SWIN_UNETR_KWARGS, "use_v2": False},
    source_layout="supervised_suprem_swinunetr_2100.pth: {'net': {'module.backbone.swinViT.*', "
    "'module.backbone.{encoder*,decoder*}.*' and 'module.{precls_conv,GAP,controller,"
    "organ_embedding,text_to_vision}*' (dropped)}, 'optimizer', 'scheduler', 'epoch'}",
    reference="https://huggingface.co/MrGiovanni/SuPreM/blob/main/supervised_suprem_swinunetr_2100.pth",
    drop=SWIN_DROP,
)
def _map_suprem_swinunetr(content: Any) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in _net(content).items():
        key = str(key).removeprefix("module.")
        if key.startswith("backbone.swinViT."):
            key = key.removeprefix("backbone.")
        out[key] = value
    return out


_DOWN_BLOCK = re.compile(r"^down_layers\.(\d+)\.(\d+)\.(norm[12]|conv[12])\.(?:conv\.)?(\w+)$")
_DOWN_CONV = re.compile(r"^down_layers\.(\d+)\.0\.conv\.weight$")


def segresnet_to_encoder(key: str) -> str:
    """A MONAI ``SegResNet`` encoder key → the ``encoder.*`` key of a ``SegResEncoder`` with
    the same ``blocks_down`` (other keys unchanged)::

        convInit.conv.weight              → encoder.conv_init.weight
        down_layers.{i}.0.conv.weight     → encoder.layers.{i-1}.downsample.weight  (i ≥ 1)
        down_layers.{i}.{j}.norm1.weight  → encoder.layers.{i}.blocks.{j-1}.norm1.weight
        down_layers.{i}.{j}.conv1.conv.weight → encoder.layers.{i}.blocks.{j-1}.conv1.weight
    """
    if key == "convInit.conv.weight":
        return "encoder.conv_init.weight"
    if (m := _DOWN_CONV.match(key)) and int(m[1]) >= 1:
        return f"encoder.layers.{int(m[1]) - 1}.downsample.weight"
    if (m := _DOWN_BLOCK.match(key)) and int(m[2]) >= 1:
        return f"encoder.layers.{m[1]}.blocks.{int(m[2]) - 1}.{m[3]}.{m[4]}"
    return key


@_release(
    name="suprem-segresnet",
    architecture="segresnet_encoder_3d",
    kwargs={
        "in_chans": 1,
        "init_filters": 16,
        "blocks_down": [1, 2, 2, 4],
        "norm": ["group", {"num_groups": 8, "affine": True}],
        "act": ["relu", {"inplace": True}],
    },
    source_layout="supervised_suprem_segresnet_2100.pth: {'net': {'module.convInit.*', "
    "'module.down_layers.*' (MONAI SegResNet encoder, init_filters 16, GroupNorm(8)), "
    "'module.{up_layers,up_samples,conv_final}.*' (decoder, dropped)}, 'optimizer', "
    "'scheduler', 'epoch'}",
    reference="https://huggingface.co/MrGiovanni/SuPreM/blob/main/supervised_suprem_segresnet_2100.pth",
    drop=("up_layers.*", "up_samples.*", "conv_final.*"),
)
def _map_suprem_segresnet(content: Any) -> dict[str, Tensor]:
    return {
        segresnet_to_encoder(str(k).removeprefix("module.")): v for k, v in _net(content).items()
    }
