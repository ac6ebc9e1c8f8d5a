"""DOFA: a ViT whose patch embedding is generated from the input bands' wavelengths, so one
set of weights takes any band list (Xiong et al. 2024, "Neural plasticity-inspired multimodal
foundation model for Earth observation", arXiv:2403.15356).

The hypernetwork, as in TorchGeo 0.8.1 ``torchgeo/models/dofa.py`` (``DOFAEmbedding``,
``TransformerWeightGenerator``, ``FCResLayer``; the original zhu-xlab/DOFA code):

* each band's centre wavelength (µm) × 1000 gets a 1D sin-cos code of width 128 (float32),
  refined by a residual MLP (``fclayer.w1``/``w2``, ReLU);
* a one-layer post-norm ``nn.TransformerEncoder`` (4 heads, GELU) reads 128 learned weight
  tokens, the band codes and one bias token; ``fc_weight`` maps each band's output (plus its
  code) to a ``p × p × D`` kernel slice, ``fc_bias`` maps the bias token to ``D``;
* kernel and bias are scaled by 0.01 and applied as ``conv2d(stride=p, padding=1)`` — the
  release's one-pixel padding is kept (for ``H`` divisible by ``p`` the grid is ``H / p``;
  the windows are shifted by one pixel).

The rest is timm's ViT (:class:`~domainfm.domains.geospatial.timm_vit.TimmViT`): class token,
a fixed sin-cos ``pos_embed`` table stored in the release (loaded, resampled by timm for
another grid), pre-norm blocks with LayerNorm eps 1e-6, and **no final norm** (the release
has none; TorchGeo's classifier adds a fresh ``fc_norm``). ``forward`` pools the mean of the
patch tokens (DOFA's ``global_pool=True``), without that classifier norm.

**Wavelengths**: given at construction (``wavelengths_um``, one per input band, e.g.
``RasterContract.wavelengths_um``; ``in_chans`` is their count) and used by every call, so
the standard pipelines run unchanged; a call may pass others
(``forward_tokens(x, wavelengths_um=[...])``, also ``forward`` and ``forward_intermediates``).

Shapes (``p`` the patch size)::

    x                              (B, len(wavelengths_um), H, W), H and W divisible by p
    forward_tokens(x, keep_idx)    (B, 1 + K, D), grid (H/p, W/p)
    forward(x)                     (B, D) mean of the patch tokens

Example::

    >>> dofa = DOFAViT(wavelengths_um=[0.665, 0.56, 0.49], embed_dim=64, depth=2, num_heads=4)
    >>> dofa(torch.randn(2, 3, 64, 64)).shape
    torch.Size([2, 64])
    >>> dofa(torch.randn(2, 2, 64, 64), wavelengths_um=[0.842, 1.61]).shape   # other bands
    torch.Size([2, 64])
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from domainfm.core.backbone import BACKBONES
from domainfm.core.grid import TokenGrid
from domainfm.core.vit_size import ViTShapeArgs, ViTSize
from domainfm.domains.geospatial.residual_mlp import ResidualMLP
from domainfm.domains.geospatial.timm_vit import TimmViT


def wavelength_code(wavelengths_um: Tensor, dim: int) -> Tensor:
    """``(C,)`` wavelengths in µm → ``(C, dim)`` ``[sin, cos]`` of ``nm · ω_k``, float32 as
    DOFA computes it (``ω_k = 10000^(-2k/dim)``)."""
    omega = torch.arange(dim // 2, dtype=torch.float32, device=wavelengths_um.device)
    omega = 1.0 / 10000 ** (omega / (dim / 2.0))
    angles = (wavelengths_um.float() * 1000).reshape(-1)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class FCResLayer(ResidualMLP):
    """``x + relu(w2(relu(w1(x))))`` (keys ``w1``, ``w2``)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, activation=F.relu, layer_names=("w1", "w2"))


class WeightGenerator(nn.Module):
    """Band codes ``(C, d)`` → kernel rows ``(C, p·p·D)`` and bias ``(D,)`` (keys
    ``transformer_encoder.layers.0.*``, ``fc_weight``, ``fc_bias``, ``weight_tokens``,
    ``bias_token``)."""

    def __init__(self, dim: int, out_weight: int, out_bias: int, num_tokens: int = 128) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model=dim, nhead=4, activation="gelu", norm_first=False, dropout=0.0
        )
        self.transformer_encoder = nn.TransformerEncoder(
            layer, num_layers=1, enable_nested_tensor=False
        )
        self.fc_weight = nn.Linear(dim, out_weight)
        self.fc_bias = nn.Linear(dim, out_bias)
        self.weight_tokens = nn.Parameter(torch.empty(num_tokens, dim).normal_(std=0.02))
        self.bias_token = nn.Parameter(torch.empty(1, dim).normal_(std=0.02))

    def forward(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        n = self.weight_tokens.shape[0]
        out = self.transformer_encoder(torch.cat([self.weight_tokens, codes, self.bias_token]))
        return self.fc_weight(out[n:-1] + codes), self.fc_bias(out[-1])


class WavelengthPatchEmbed(nn.Module):
    """DOFA's dynamic patch embedding: ``(B, C, H, W)`` → ``(B, H/p, W/p, D)`` with the kernel
    generated from the bands' wavelengths (:attr:`wavelengths_um`, or those of
    :meth:`using`)."""

    scaler = 0.01

    def __init__(
        self,
        *,
        wavelengths_um: Sequence[float],
        patch_size: int,
        embed_dim: int,
        img_size: int,
        code_dim: int = 128,
    ) -> None:
        super().__init__()
        self.patch = patch_size
        self.embed_dim = embed_dim
        self.code_dim = code_dim
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.wavelengths_um = [float(w) for w in wavelengths_um]
        self._call_wavelengths: list[float] | None = None
        self.weight_generator = WeightGenerator(
            code_dim, patch_size * patch_size * embed_dim, embed_dim
        )
        self.fclayer = FCResLayer(code_dim)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.constant_(m.bias, 0.01)

    @contextmanager
    def using(self, wavelengths_um: Sequence[float] | None) -> Iterator[None]:
        """Use other wavelengths inside the block (``None``: the constructed ones)."""
        before = self._call_wavelengths
        self._call_wavelengths = None if wavelengths_um is None else list(wavelengths_um)
        try:
            yield
        finally:
            self._call_wavelengths = before

    def kernel(
        self, wavelengths_um: Sequence[float], device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """The generated conv weight ``(D, C, p, p)`` and bias ``(D,)``."""
        waves = torch.tensor(list(wavelengths_um), dtype=torch.float32, device=device)
        codes = self.fclayer(wavelength_code(waves, self.code_dim))
        weight, bias = self.weight_generator(codes)
        p = self.patch
        weight = weight.view(len(waves), p, p, self.embed_dim).permute(3, 0, 1, 2)
        return weight * self.scaler, bias.view(self.embed_dim) * self.scaler

    def forward(self, x: Tensor) -> Tensor:
        waves = self._call_wavelengths or self.wavelengths_um
        if x.shape[1] != len(waves):
            raise ValueError(f"x has {x.shape[1]} bands but {len(waves)} wavelengths were given")
        weight, bias = self.kernel(waves, x.device)
        out = F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), stride=self.patch, padding=1)
        return out.permute(0, 2, 3, 1)  # (B, H/p, W/p, D)


@BACKBONES.register("dofa_vit")
class DOFAViT(TimmViT):
    """DOFA encoder (implements :class:`~domainfm.core.backbone.Backbone`).

    Args:
        wavelengths_um: centre wavelength (µm) of each input band, in channel order.
        in_chans: optional; must equal ``len(wavelengths_um)`` when given.
        img_size: side of the stored position table's grid (224 → 14 × 14 at p = 16).
        patch_size: patch side (16).
        size_args: the transformer's size, :class:`~domainfm.core.vit_size.ViTShapeArgs`
            (default DOFA-B: ``embed_dim=768, depth=12, num_heads=12``; DOFA-L: 1024, 24,
            16; qkv bias and LayerNorm epsilon 1e-6 as the releases).
    """

    def __init__(
        self,
        *,
        wavelengths_um: Sequence[float],
        in_chans: int | None = None,
        img_size: int = 224,
        patch_size: int = 16,
        **size_args: Unpack[ViTShapeArgs],
    ) -> None:
        waves = [float(w) for w in wavelengths_um]
        if not waves or not all(math.isfinite(w) and w > 0 for w in waves):
            raise ValueError(f"wavelengths_um must be positive µm values, got {waves}")
        if in_chans is not None and in_chans != len(waves):
            raise ValueError(
                f"in_chans={in_chans} but {len(waves)} wavelengths_um: DOFA needs one "
                "wavelength per input band (model_kwargs={'wavelengths_um': [...]})"
            )
        size = ViTSize.from_keywords(size_args, accepted=ViTShapeArgs, owner=type(self).__name__)
        super().__init__(
            in_chans=len(waves),
            img_size=img_size,
            patch_size=patch_size,
            **size.kwargs(),
            global_pool="avg",
            final_norm=False,
        )
        self.patch_embed = WavelengthPatchEmbed(
            wavelengths_um=waves, patch_size=patch_size, embed_dim=size.embed_dim, img_size=img_size
        )
        assert self.pos_embed is not None
        self.pos_embed.requires_grad_(False)  # a fixed sin-cos table in the release

    def _check_input(self, x: Tensor) -> TokenGrid:
        embed = self.patch_embed
        assert isinstance(embed, WavelengthPatchEmbed)
        waves = embed._call_wavelengths or embed.wavelengths_um
        if x.ndim == 4 and x.shape[1] != len(waves):
            raise ValueError(f"x has {x.shape[1]} bands but {len(waves)} wavelengths_um")
        return self.token_grid(x.shape[2:])

    def _using(self, wavelengths_um: Sequence[float] | None) -> AbstractContextManager[None]:
        embed = self.patch_embed
        assert isinstance(embed, WavelengthPatchEmbed)
        return embed.using(wavelengths_um)

    def forward_tokens(
        self,
        x: Tensor,
        keep_idx: Tensor | None = None,
        *,
        wavelengths_um: Sequence[float] | None = None,
    ) -> tuple[Tensor, TokenGrid]:
        """As :meth:`TimmViT.forward_tokens`; ``wavelengths_um`` overrides the constructed
        ones for this call."""
        with self._using(wavelengths_um):
            return super().forward_tokens(x, keep_idx)

    def forward_intermediates(  # type: ignore[override]
        self,
        x: Tensor,
        indices: int | Sequence[int] = 1,
        norm: bool = False,
        *,
        wavelengths_um: Sequence[float] | None = None,
    ) -> list[Tensor]:
        """As :meth:`TimmViT.forward_intermediates`, with per-call ``wavelengths_um``."""
        with self._using(wavelengths_um):
            return super().forward_intermediates(x, indices, norm)

    def forward(  # type: ignore[override]
        self, x: Tensor, *, wavelengths_um: Sequence[float] | None = None
    ) -> Tensor:
        """Mean of the patch tokens ``(B, D)``, with per-call ``wavelengths_um``."""
        tokens, _ = self.forward_tokens(x, wavelengths_um=wavelengths_um)
        return self.pool_tokens(tokens)
