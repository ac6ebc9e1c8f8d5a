"""Clay's encoder: a ViT whose patch projection is generated from the bands' wavelengths, with
a position code scaled by the ground sample distance and time / location codes.

Clay v1 / v1.5 (Clay Foundation, https://github.com/Clay-foundation/model, model
specification in ``docs/release-notes/specification.md``) is a masked autoencoder over rasters
of any sensor. Its encoder (``claymodel/model.py`` ``Encoder``, ``src/model.py`` in v1.0):

* **wavelength-generated patch embedding** (DOFA's dynamic embedding, Xiong et al. 2024,
  arXiv:2403.15356; Clay's ``claymodel/factory.py`` ``DynamicEmbedding``): each band's centre
  wavelength ``λ`` (µm) gets a 1-D sin-cos code of width 128 (``ω_k = 10000^(-k/63)``,
  ``[sin(λ ω) ‖ cos(λ ω)]``), refined by a residual two-layer GELU MLP (``fclayer``); 128
  learned weight tokens, the band codes and one learned bias token pass through one
  post-norm ``nn.TransformerEncoderLayer`` (width 128, 4 heads, GELU, no dropout); each band's
  output plus its code is mapped by ``fc_weight`` to that band's ``p × p × D`` kernel, the
  bias token's output by ``fc_bias`` to the ``D`` biases; the input is convolved with
  ``0.02 ×`` the generated kernel (stride ``p``). Any band list works: the bands are a
  constructor argument (``wavelengths_um``), not a weight shape.
* **positions**: the first ``D - 8`` channels of each patch token get a 2-D sin-cos table
  scaled by the ground sample distance (Clay's ``posemb_sincos_2d_with_gsd``:
  ``ω_k = gsd / 10000^(2 (k / (n - 1)) / (D - 8))`` for ``k < n``,
  ``n = (D - 8) / 4``, channels ``[sin(x ω) ‖ cos(x ω) ‖ sin(y ω) ‖ cos(y ω)]``), recomputed
  for every grid and GSD (nothing stored); the last 8 channels get the sample's metadata
  ``[time (4) ‖ latlon (4)]`` = ``[sin w, cos w, sin h, cos h, sin φ, cos φ, sin λ, cos λ]``
  (week of year ``w = 2π week / 52``, hour ``h = 2π hour / 24``, latitude/longitude in
  radians; Clay's tutorials ``normalize_timestamp`` / ``normalize_latlon``); zeros when
  unknown. The class token gets no position code.
* **transformer**: pre-norm blocks without qkv / output-projection biases, LayerNorm eps
  1e-5, a final LayerNorm (vit-pytorch's ``simple_vit.Transformer`` 1.6.4, copied as
  ``claymodel/backbone.py``); these are timm ``Block``s here (``qkv_bias=False``, no
  attention-projection bias, biased MLP), so the release's
  ``transformer.layers.N.{0.norm, 0.to_qkv, 0.to_out, 1.net.0, 1.net.1, 1.net.3}`` keys map
  onto ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``.

Clay builds its grid as ``sqrt(L) × sqrt(L)`` (square inputs); here ``h × w`` grids follow
from the input, identical for square input.

Shapes::

    x                                      (B, C, H, W)   C = len(wavelengths_um)
    time, latlon (optional keywords)       (B, 4) each
    forward_tokens(x, keep_idx)            (B, 1 + K, D), grid (H/p, W/p)
    forward(x)                             (B, D)  the class token (Clay's embedding)

Example::

    >>> enc = ClayEncoder(wavelengths_um=[0.665, 0.56, 0.493], gsd_m=10.0, embed_dim=64,
    ...                   depth=2, num_heads=4, dim_head=16, patch_size=8)
    >>> enc(torch.randn(2, 3, 32, 32), time=torch.zeros(2, 4), latlon=torch.zeros(2, 4)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Unpack

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Mlp
from torch import Tensor, nn

from domainfm.core.backbone import BACKBONES
from domainfm.core.grid import TokenGrid
from domainfm.core.kept_tokens import gather_kept
from domainfm.core.vit import VisionTransformerND, vit_blocks
from domainfm.core.vit_size import ViTShapeArgs, ViTSize
from domainfm.domains.geospatial.residual_mlp import ResidualMLP

METADATA_DIM = 8
"""Channels of each patch token carrying ``[time (4) ‖ latlon (4)]``."""


def wave_code(waves_um: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """Clay's 1-D sin-cos code of wavelengths ``(C,)`` → ``(C, dim)``:
    ``ω_k = temperature^(-k / (dim/2 - 1))``, ``[sin(λ ω) ‖ cos(λ ω)]`` (float32)."""
    omega = torch.arange(dim // 2, device=waves_um.device) / (dim // 2 - 1)
    omega = 1.0 / (temperature**omega)
    angles = waves_um.float()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def gsd_pos_table(h: int, w: int, dim: int, gsd: float, temperature: float = 10000.0) -> Tensor:
    """Clay's GSD-scaled 2-D sin-cos table ``(h·w, dim)`` (see the module docstring; float32,
    tokens in row-major order)."""
    if dim % 4:
        raise ValueError(f"the position table needs a multiple of 4 channels, got {dim}")
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    omega = torch.arange(dim // 4) / (dim // 4 - 1)
    omega = 1.0 / (temperature ** (2 * omega / dim)) * gsd
    xs = x.flatten()[:, None] * omega[None, :]
    ys = y.flatten()[:, None] * omega[None, :]
    return torch.cat([xs.sin(), xs.cos(), ys.sin(), ys.cos()], dim=1).float()


class ResidualGeluMLP(ResidualMLP):
    """``x + gelu(l2(gelu(l1(x))))`` (Clay's ``FCBlock``)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, activation=F.gelu, layer_names=("l1", "l2"))


class WaveWeightGenerator(nn.Module):
    """Band codes ``(C, wave_dim)`` → conv kernel rows ``(C, p·p·D)`` and bias ``(D,)``
    (Clay's ``WavesTransformer``, encoder variant)."""

    def __init__(self, *, wave_dim: int, out_dim: int, embed_dim: int, num_latent_tokens: int):
        super().__init__()
        self.num_latent_tokens = num_latent_tokens
        layer = nn.TransformerEncoderLayer(
            d_model=wave_dim,
            nhead=4,
            activation="gelu",
            dropout=0.0,
            norm_first=False,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.fc_weight = nn.Linear(wave_dim, out_dim)
        self.fc_bias = nn.Linear(wave_dim, embed_dim)
        self.weight_tokens = nn.Parameter(torch.randn(num_latent_tokens, wave_dim) * 0.02)
        self.bias_token = nn.Parameter(torch.randn(1, wave_dim) * 0.02)

    def forward(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        seq = torch.cat([self.weight_tokens, codes, self.bias_token], dim=0)  # (T + C + 1, E)
        out = self.encoder(seq)  # unbatched sequence, as Clay
        bands = slice(self.num_latent_tokens, -1)
        weights = self.fc_weight(out[bands] + seq[bands])  # (C, p*p*D)
        return weights, self.fc_bias(out[-1])  # (D,)


class WavelengthPatchEmbed(nn.Module):
    """Patch embedding generated from the bands' wavelengths (see the module docstring).

    Args:
        patch_size: patch side ``p``.
        embed_dim: ``D``.
        wave_dim: width of the wavelength codes (128 in Clay).
        num_latent_tokens: learned weight tokens of the generator (128 in Clay).
    """

    def __init__(
        self, *, patch_size: int, embed_dim: int, wave_dim: int = 128, num_latent_tokens: int = 128
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.wave_dim = wave_dim
        self.weight_generator = WaveWeightGenerator(
            wave_dim=wave_dim,
            out_dim=patch_size * patch_size * embed_dim,
            embed_dim=embed_dim,
            num_latent_tokens=num_latent_tokens,
        )
        self.fclayer = ResidualGeluMLP(wave_dim)
        for m in self.modules():  # Clay: xavier-uniform linears, zero biases
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def kernel(self, waves_um: Tensor) -> tuple[Tensor, Tensor]:
        """The generated conv weight ``(D, C, p, p)`` (already scaled by 0.02) and bias."""
        codes = self.fclayer(wave_code(waves_um, self.wave_dim))
        weights, bias = self.weight_generator(codes)
        p = self.patch_size
        weight = rearrange(weights, "cin (cout k1 k2) -> cout cin k1 k2", k1=p, k2=p)
        return weight * 0.02, bias

    def forward(self, x: Tensor, waves_um: Tensor) -> Tensor:
        """``(B, C, H, W)`` and wavelengths ``(C,)`` → tokens ``(B, h·w, D)``."""
        weight, bias = self.kernel(waves_um.to(x.device))
        out = F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), stride=self.patch_size)
        return out.flatten(2).transpose(1, 2)


def _biased_mlp(**kwargs: Any) -> Mlp:
    """timm ``Mlp`` with biases, whatever the block's ``proj_bias``."""
    kwargs["bias"] = True
    return Mlp(**kwargs)


@BACKBONES.register("clay_encoder")
class ClayEncoder(VisionTransformerND):
    """Clay's encoder (see the module docstring).

    Args:
        wavelengths_um: centre wavelength (µm) of each input band, in channel order.
        gsd_m: ground sample distance (m) of the input, scaling the position code.
        patch_size: patch side ``p`` (8 in Clay v1 / v1.5).
        dim_head: channels per head (64 in Clay); ``num_heads * dim_head`` must equal
            ``embed_dim``.
        wave_dim, num_latent_tokens: sizes of the wavelength weight generator (128, 128).
        global_pool: ``"token"`` (class token, Clay's embedding) or ``"avg"``.
        size_args: the transformer's size, :class:`~domainfm.core.vit_size.ViTShapeArgs`
            (default Clay v1.5 base: ``embed_dim=768, depth=12, num_heads=12,
            mlp_ratio=4.0``; no qkv bias and LayerNorm epsilon 1e-5 as the release).
    """

    def __init__(
        self,
        *,
        wavelengths_um: Sequence[float],
        gsd_m: float = 10.0,
        patch_size: int = 8,
        dim_head: int = 64,
        wave_dim: int = 128,
        num_latent_tokens: int = 128,
        global_pool: Literal["token", "avg"] = "token",
        **size_args: Unpack[ViTShapeArgs],
    ) -> None:
        waves = [float(v) for v in wavelengths_um]
        size = ViTSize.from_keywords(
            size_args,
            accepted=ViTShapeArgs,
            owner=type(self).__name__,
            qkv_bias=False,
            norm_eps=1e-5,
        )
        embed_dim, num_heads = size.embed_dim, size.num_heads
        if num_heads * dim_head != embed_dim:
            raise ValueError(
                f"num_heads={num_heads} x dim_head={dim_head} must equal embed_dim={embed_dim}"
            )
        if (embed_dim - METADATA_DIM) % 4 or not gsd_m > 0:
            raise ValueError(
                f"embed_dim={embed_dim} must leave a multiple of 4 channels besides the "
                f"{METADATA_DIM} metadata channels, and gsd_m={gsd_m} must be > 0"
            )
        super().__init__(
            in_chans=len(waves),
            spatial_dims=2,
            patch_size=patch_size,
            **size.kwargs(),
            global_pool=global_pool,
        )
        self.wavelengths_um = waves
        self.gsd_m = float(gsd_m)
        self.patch_embed = WavelengthPatchEmbed(
            patch_size=patch_size,
            embed_dim=embed_dim,
            wave_dim=wave_dim,
            num_latent_tokens=num_latent_tokens,
        )
        self.blocks = vit_blocks(size, proj_bias=False, mlp_layer=_biased_mlp)

    def _patch_pos_embed(self, grid: TokenGrid, ref: Tensor) -> Tensor:
        """The GSD-scaled table with zero metadata, ``(1, N, D)``."""
        h, w = grid.shape
        table = gsd_pos_table(h, w, self.embed_dim - METADATA_DIM, self.gsd_m)
        return F.pad(table, (0, METADATA_DIM))[None].to(device=ref.device, dtype=ref.dtype)

    def _prefix(self, batch: int) -> Tensor | None:
        assert self.cls_token is not None
        return self.cls_token.expand(batch, -1, -1)  # Clay: no position code on the class token

    def _embed(
        self,
        x: Tensor,
        grid: TokenGrid,
        keep_idx: Tensor | None,
        metadata: Tensor | None = None,
    ) -> Tensor:
        waves = torch.tensor(self.wavelengths_um, device=x.device)
        tokens = self.patch_embed(x, waves)  # (B, N, D)
        codes = self._patch_pos_embed(grid, tokens).expand(x.shape[0], -1, -1)
        if metadata is not None:
            codes = torch.cat(
                [
                    codes[..., :-METADATA_DIM],
                    metadata.to(tokens)[:, None].expand(-1, codes.shape[1], -1),
                ],
                dim=-1,
            )
        tokens = tokens + codes
        if keep_idx is not None:
            tokens = gather_kept(tokens, keep_idx)
        return self._prepend_prefix(tokens)

    @staticmethod
    def _metadata(x: Tensor, time: Tensor | None, latlon: Tensor | None) -> Tensor | None:
        """``[time ‖ latlon]`` ``(B, 8)`` (zeros for a missing part), or ``None`` when both are
        missing."""
        if time is None and latlon is None:
            return None
        parts = []
        for name, part in (("time", time), ("latlon", latlon)):
            part = x.new_zeros(x.shape[0], 4) if part is None else part.to(x)
            if part.shape != (x.shape[0], 4):
                raise ValueError(f"{name} must be (B={x.shape[0]}, 4), got {tuple(part.shape)}")
            parts.append(part)
        return torch.cat(parts, dim=1)

    def forward_tokens(
        self,
        x: Tensor,
        keep_idx: Tensor | None = None,
        *,
        time: Tensor | None = None,
        latlon: Tensor | None = None,
    ) -> tuple[Tensor, TokenGrid]:
        """Encode ``x`` ``(B, C, H, W)`` → normed tokens ``(B, 1 + K, D)`` and the grid.

        Args:
            x: input batch, bands in the order of ``wavelengths_um``.
            keep_idx: ``(B, K)`` grid indices of the tokens to encode; all when ``None``.
            time: ``(B, 4)`` ``[sin w, cos w, sin h, cos h]``; zeros when ``None``.
            latlon: ``(B, 4)`` ``[sin φ, cos φ, sin λ, cos λ]``; zeros when ``None``.
        """
        grid = self._check_input(x)
        tokens = self._embed(x, grid, keep_idx, self._metadata(x, time, latlon))
        for block in self.blocks:
            tokens = self._block(block, tokens)
        return self.norm(tokens), grid

    def forward(
        self, x: Tensor, *, time: Tensor | None = None, latlon: Tensor | None = None
    ) -> Tensor:
        """Pooled embedding ``(B, D)`` (metadata as in :meth:`forward_tokens`)."""
        tokens, _ = self.forward_tokens(x, time=time, latlon=latlon)
        return self.pool_tokens(tokens)
