"""SSL4EO-S12 Sentinel-2 releases: files with the real key layouts (built from timm models with
13 input bands, no download) load strictly and give timm's numbers; stray or missing keys fail
loudly; a 13-band release maps by band name into 4- and 10-band models; the contracts are the
releases' own (checked against TorchGeo's weight enums when TorchGeo is installed)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

import domainfm.domains.geospatial  # noqa: F401 - registers the releases
from domainfm.core.backbone import build_backbone
from domainfm.core.grid import TokenGrid
from domainfm.core.objectives.mae import MAE
from domainfm.core.patching import patchify
from domainfm.domains.geospatial.raster_header import SENTINEL2_L1C_BANDS
from domainfm.pretrained.registry import (
    RELEASED,
    load_released,
    mapped_release_state,
    read_weights_file,
)
from domainfm.pretrained.report import CheckpointMismatchError, compare_state_dict

RN50_NAMES = ("torchgeo-resnet50-sentinel2-all-moco", "torchgeo-resnet50-sentinel2-all-dino")
VIT_NAMES = (
    "torchgeo-vit-small-patch16-224-sentinel2-all-moco",
    "torchgeo-vit-small-patch16-224-sentinel2-all-dino",
    "torchgeo-vit-small-patch16-224-sentinel2-all-mae",
)
MAE_NAME = "ssl4eo-s12-vit-small-patch16-mae"
ORIGINAL_NAMES = (
    "ssl4eo-s12-resnet50-moco",
    "ssl4eo-s12-vit-small-patch16-dino",
    "ssl4eo-s12-resnet50-dino",
    MAE_NAME,
)
BANDS4 = ["B02", "B03", "B04", "B08"]
BANDS10 = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


@pytest.fixture(scope="module")
def rn50() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet50", pretrained=False, in_chans=13).eval()


@pytest.fixture(scope="module")
def vits() -> nn.Module:
    torch.manual_seed(1)
    return timm.create_model("vit_small_patch16_224", pretrained=False, in_chans=13).eval()


def _without(state: dict[str, Tensor], *prefixes: str) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


def _same_resnet_features(model: nn.Module, ref: nn.Module) -> None:
    x = torch.randn(1, 13, 64, 64)
    with torch.no_grad():
        maps = model.eval().forward_intermediates(x)
        torch.testing.assert_close(maps[-1], ref.forward_features(x))
        torch.testing.assert_close(maps[0], ref.act1(ref.bn1(ref.conv1(x))))


def _same_vit_tokens(model: nn.Module, ref: nn.Module) -> None:
    x = torch.randn(1, 13, 224, 224)
    with torch.no_grad():
        tokens, _ = model.eval().forward_tokens(x)
        torch.testing.assert_close(tokens, ref.forward_features(x))


@pytest.mark.parametrize("name", RN50_NAMES)
def test_torchgeo_resnet50_loads_strictly(name: str, rn50: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "rn50.pth"
    torch.save(_without(rn50.state_dict(), "fc."), path)  # TorchGeo's files have no fc
    model, report = load_released(name, path)
    assert report.ok and not report.unexpected and not report.resampled
    assert len(report.loaded) == len(model.state_dict()) == len(rn50.state_dict()) - 2
    _same_resnet_features(model, rn50)
    torch.save(rn50.state_dict(), path)  # a copy that kept the classifier: dropped
    report = load_released(name, path)[1]
    assert report.ok and report.dropped == ["fc.bias", "fc.weight"]


@pytest.mark.parametrize("name", VIT_NAMES)
def test_torchgeo_vit_small_loads_strictly(name: str, vits: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "vits.pth"
    torch.save(vits.state_dict(), path)
    model, report = load_released(name, path)
    assert report.ok and not report.unexpected
    assert len(report.loaded) == len(model.state_dict()) == len(vits.state_dict()) - 2  # head
    _same_vit_tokens(model, vits)
    small, report = load_released(name, path, model_kwargs={"grid_size": 2})  # 32x32 input
    assert report.resampled == [("pos_embed", (1, 197, 384), (1, 5, 384))]
    assert small(torch.randn(1, 13, 32, 32)).shape == (1, 384)


def _moco_checkpoint(ref: nn.Module, queue: int = 512) -> dict[str, Any]:
    """``B13_rn50_moco_0099_ckpt.pth`` as pretrain_moco_v2_s2c.py saves it (DDP MoCo, --mlp);
    ``queue`` is K (65536 in the release)."""
    encoder = _without(ref.state_dict(), "fc.")
    state: dict[str, Tensor] = {f"module.encoder_q.{k}": v for k, v in encoder.items()}
    mlp = {"fc.0.weight": (2048, 2048), "fc.0.bias": (2048,), "fc.2.weight": (128, 2048)}
    mlp["fc.2.bias"] = (128,)
    for branch in ("encoder_q", "encoder_k"):
        state.update({f"module.{branch}.{k}": torch.randn(s) for k, s in mlp.items()})
    state.update({f"module.encoder_k.{k}": v + 1 for k, v in encoder.items()})
    state["module.queue"] = torch.randn(128, queue)  # (dim, K)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {"epoch": 100, "arch": "resnet50", "state_dict": state, "optimizer": {}}


def test_ssl4eo_moco_resnet50_full_checkpoint(rn50: nn.Module, tmp_path: Path) -> None:
    ckpt = _moco_checkpoint(rn50)
    path = tmp_path / "B13_rn50_moco_0099_ckpt.pth"
    torch.save(ckpt, path)
    model, report = load_released("ssl4eo-s12-resnet50-moco", path)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    _same_resnet_features(model, rn50)  # encoder_q, not the (shifted) encoder_k
    encoder_k = [k for k in ckpt["state_dict"] if k.startswith("module.encoder_k.")]
    head_q = [f"module.encoder_q.fc.{i}.{p}" for i in (0, 2) for p in ("bias", "weight")]
    assert report.dropped == sorted(
        [*encoder_k, *head_q, "module.queue", "module.queue_ptr"]
    )  # every pretraining-only key, by name
    # an unknown key is left for the report to name
    ckpt["state_dict"]["module.encoder_q.extra_bn.weight"] = torch.ones(3)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected +extra_bn\.weight"):
        load_released("ssl4eo-s12-resnet50-moco", path)
    del ckpt["state_dict"]["module.encoder_q.extra_bn.weight"]
    del ckpt["state_dict"]["module.encoder_q.layer4.2.bn3.weight"]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointMismatchError, match=r"missing +encoder\.layer4\.2\.bn3\.weight"):
        load_released("ssl4eo-s12-resnet50-moco", path)
    torch.save(rn50.state_dict(), tmp_path / "plain.pth")  # TorchGeo's layout, not MoCo's
    with pytest.raises(ValueError, match="does not have the key layout"):
        load_released("ssl4eo-s12-resnet50-moco", tmp_path / "plain.pth")


def _dino_checkpoint(ref: nn.Module, teacher_prefix: str, out_dim: int = 64) -> dict[str, Any]:
    """A DINO checkpoint as pretrain_dino_s2c.py saves it (MultiCropWrapper + DINOHead)."""
    backbone = _without(ref.state_dict(), "fc.", "head.")
    dim = next(
        v.shape[-1] for k, v in ref.state_dict().items() if k in ("fc.weight", "head.weight")
    )
    head = {
        "head.mlp.0.weight": torch.randn(2048, dim),
        "head.mlp.2.weight": torch.randn(2048, 2048),
        "head.mlp.4.weight": torch.randn(256, 2048),
        "head.last_layer.weight_g": torch.ones(out_dim, 1),
        "head.last_layer.weight_v": torch.randn(out_dim, 256),
    }
    teacher = {f"{teacher_prefix}backbone.{k}": v for k, v in backbone.items()}
    teacher.update({f"{teacher_prefix}{k}": v for k, v in head.items()})
    student = {f"module.backbone.{k}": v * 2 for k, v in backbone.items()}
    return {"teacher": teacher, "student": student, "epoch": 100, "dino_loss": {}}


def test_ssl4eo_dino_vit_small_reads_the_teacher(vits: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "B13_vits16_dino_0099_ckpt.pth"
    torch.save(_dino_checkpoint(vits, teacher_prefix=""), path)  # ViT: teacher not DDP
    model, report = load_released("ssl4eo-s12-vit-small-patch16-dino", path)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    assert report.dropped == [*(f"head.last_layer.weight_{x}" for x in "gv")] + [
        f"head.mlp.{i}.weight" for i in (0, 2, 4)
    ]  # the DINOHead, by name
    _same_vit_tokens(model, vits)


def test_ssl4eo_dino_resnet50_reads_the_ddp_teacher(rn50: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "B13_rn50_dino_0099_ckpt.pth"
    torch.save(_dino_checkpoint(rn50, teacher_prefix="module."), path)  # BatchNorm: DDP
    model, report = load_released("ssl4eo-s12-resnet50-dino", path)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    assert len(report.dropped) == 5 and all(k.startswith("head.") for k in report.dropped)
    _same_resnet_features(model, rn50)


@pytest.mark.parametrize(("bands", "dropped"), [(BANDS4, 9), (BANDS10, 3)])
def test_13_band_release_into_fewer_bands(
    bands: list[str], dropped: int, rn50: nn.Module, tmp_path: Path
) -> None:
    path = tmp_path / "rn50.pth"
    torch.save(_without(rn50.state_dict(), "fc."), path)
    name = RN50_NAMES[0]
    model, report = load_released(name, path, channels=bands)
    assert model.in_chans == len(bands)
    [(key, detail)] = report.adapted
    assert key == "encoder.conv1.weight"
    assert detail.startswith("channels " + ", ".join(f"{b}<-{b}" for b in bands))
    assert len(detail.split("; dropped ")[1].split(", ")) == dropped
    assert report.ok and len(report.loaded) == len(model.state_dict())
    # the kept bands give the 13-band features of an input whose other bands are zero
    x = torch.randn(1, len(bands), 64, 64)
    full = torch.zeros(1, 13, 64, 64)
    full[:, [SENTINEL2_L1C_BANDS.index(b) for b in bands]] = x
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval()(x), rn50.forward_head(rn50.forward_features(full), True)
        )


def test_13_band_vit_release_into_4_bands_plus_a_new_one(vits: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "vits.pth"
    torch.save(vits.state_dict(), path)
    bands = [*BANDS4, "NDVI"]  # a band the release never saw starts at zero
    model, report = load_released(VIT_NAMES[1], path, channels=bands)
    [(key, detail)] = report.adapted
    assert key == "patch_embed.proj.weight" and "new NDVI (zeros)" in detail
    weight = model.state_dict()["patch_embed.proj.weight"]
    torch.testing.assert_close(weight[:, 4], torch.zeros_like(weight[:, 4]))
    torch.testing.assert_close(weight[:, 3], vits.state_dict()["patch_embed.proj.weight"][:, 7])


def test_contracts_are_the_releases_own() -> None:
    for name in (*RN50_NAMES, *VIT_NAMES, *ORIGINAL_NAMES):
        entry = RELEASED.get(name)
        assert entry.input["bands"] == list(SENTINEL2_L1C_BANDS), name
        assert entry.input["normalization"] == {"type": "scale", "divide_by": 10000.0}, name
        assert entry.kwargs["in_chans"] == 13 and entry.license.startswith("CC-BY-4.0"), name


def _ours(torchgeo_band: str) -> str:
    """TorchGeo's ``B1``/``B8a`` spelling → ours (``B01``/``B8A``)."""
    digits = torchgeo_band[1:].upper()
    return "B" + (digits.zfill(2) if digits.isdigit() else digits)


@pytest.mark.parametrize("name", (*RN50_NAMES, *VIT_NAMES))
def test_contract_matches_torchgeo(name: str, tmp_path: Path) -> None:
    """TorchGeo's enum (meta bands/in_chans, Normalize std, URL) and its model builder's real
    state dict agree with the registered entry."""
    tg = pytest.importorskip("torchgeo.models")
    vit = "vit" in name
    enum = tg.ViTSmall16_Weights if vit else tg.ResNet50_Weights
    weights = enum[f"SENTINEL2_ALL_{name.rsplit('-', 1)[1].upper()}"]  # MOCO, DINO, MAE
    entry = RELEASED.get(name)
    assert weights.meta["in_chans"] == entry.kwargs["in_chans"]
    assert [_ours(b) for b in weights.meta["bands"]] == entry.input["bands"]
    [normalize] = [m for m in weights.transforms if type(m).__name__ == "Normalize"]
    assert (
        float(torch.as_tensor(normalize.std).flatten()[0])
        == entry.input["normalization"]["divide_by"]
    )
    assert float(torch.as_tensor(normalize.mean).flatten()[0]) == 0.0
    assert weights.url.split("/")[3] in entry.reference  # the Hugging Face repository
    builder = tg.vit_small_patch16_224 if vit else tg.resnet50
    torch.save(builder(weights=None, in_chans=13).state_dict(), tmp_path / "tg.pth")
    assert load_released(name, tmp_path / "tg.pth")[1].ok


def _mae_checkpoint(
    encoder: nn.Module, *, decoder_depth: int = 8, grid: int = 14
) -> dict[str, Any]:
    """``B13_vits16_mae_ep99.pth`` as main_pretrain.py's ``save_model`` writes it: the
    ``MaskedAutoencoderViT`` state dict (timm encoder keys, no head; decoder 512 wide with 16
    heads; ``decoder_pred`` (16 * 16 * 13, 512)) under ``"model"``."""
    state = _without(encoder.state_dict(), "head.", "fc_norm.")
    state["mask_token"] = torch.randn(1, 1, 512) * 0.02
    state["decoder_pos_embed"] = _released_mae_table(grid, 512)  # fixed, stored
    state["decoder_embed.weight"] = torch.randn(512, 384) * 0.02
    state["decoder_embed.bias"] = torch.zeros(512)
    for i in range(decoder_depth):
        block = Block(512, 16, 4.0, qkv_bias=True, norm_layer=nn.LayerNorm)
        state.update({f"decoder_blocks.{i}.{k}": v for k, v in block.state_dict().items()})
    state["decoder_norm.weight"] = torch.ones(512)
    state["decoder_norm.bias"] = torch.zeros(512)
    state["decoder_pred.weight"] = torch.randn(16 * 16 * 13, 512) * 0.02
    state["decoder_pred.bias"] = torch.zeros(16 * 16 * 13)
    args = argparse.Namespace(model="mae_vit_small_patch16", mask_ratio=0.7, norm_pix_loss=True)
    return {"model": state, "optimizer": {}, "epoch": 99, "scaler": {}, "args": args}


def _small_mae_encoder() -> nn.Module:
    """The MAE encoder shrunk (2 blocks, 32 x 32 input): timm keys, as upstream's."""
    torch.manual_seed(3)
    return timm.create_model(
        "vit_small_patch16_224", pretrained=False, in_chans=13, depth=2, img_size=32
    ).eval()


def test_ssl4eo_mae_full_checkpoint_and_its_decoder(tmp_path: Path) -> None:
    """The full MAE checkpoint: the encoder loads strictly and computes timm's tokens; the
    decoder and mask token are dropped from the backbone by name and fit our MAE objective
    (the pretext head) strictly."""
    encoder = _small_mae_encoder()
    ckpt = _mae_checkpoint(encoder, decoder_depth=1, grid=2)
    path = tmp_path / "B13_vits16_mae_ep99.pth"
    torch.save(ckpt, path)
    small = {"depth": 2, "grid_size": 2}
    model, report = load_released(MAE_NAME, path, model_kwargs=small)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    decoder = [k for k in ckpt["model"] if k.startswith("decoder_") or k == "mask_token"]
    assert report.dropped == sorted(decoder)
    x = torch.randn(1, 13, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().forward_tokens(x)[0], encoder.forward_features(x))

    head = RELEASED.get(MAE_NAME).pretext
    assert head is not None and head.objective == "mae"
    mae = MAE(**{**head.kwargs, "decoder_depth": 1})
    mae.bind_backbone(model)
    state = head.map_keys(read_weights_file(path))
    kept = {k: v for k, v in state.items() if k not in head.drop}
    assert sorted(set(state) - set(kept)) == ["decoder_pos_embed"]  # fixed, recomputed
    fit = compare_state_dict(mae, kept)
    assert fit.ok and len(fit.loaded) == len(mae.state_dict()) == len(decoder) - 1
    mae.load_state_dict(kept)
    keep = torch.tensor([[3, 0]])  # visible patches, in the order the encoder saw them
    with torch.no_grad():
        tokens, grid = model.forward_tokens(x, keep)  # (1, 1 + 2, 384): class token first
        ours = mae.eval().reconstruct(tokens, grid, keep)
    torch.testing.assert_close(ours, _released_forward_decoder(ckpt["model"], tokens, keep))


def _released_mae_table(side: int, dim: int) -> Tensor:
    """models_mae's ``get_2d_sincos_pos_embed(dim, side, cls_token=True)``, written from its
    description: ``meshgrid(w, h)``, so the first half of the channels encodes the column and
    the second the row, each ``[sin(p ω), cos(p ω)]`` with ``ω_k = 1 / 10000^(k / (dim/4))``;
    a zero row for the class token first."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))

    def half(p: Tensor) -> Tensor:
        angles = p.reshape(-1).double()[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([half(cols), half(rows)], dim=1).float()
    return torch.cat([torch.zeros(1, dim), table])[None]


def _released_forward_decoder(state: dict[str, Tensor], tokens: Tensor, keep: Tensor) -> Tensor:
    """``MaskedAutoencoderViT.forward_decoder`` (models_mae.py) on the file's own tensors:
    embed, mask tokens unshuffled into place, the stored ``decoder_pos_embed`` added (class
    token included), timm blocks with LayerNorm eps 1e-6, norm, prediction, class row cut."""
    x = torch.nn.functional.linear(
        tokens, state["decoder_embed.weight"], state["decoder_embed.bias"]
    )
    n = state["decoder_pos_embed"].shape[1] - 1
    full = state["mask_token"].expand(x.shape[0], n, -1).clone()
    full[:, keep[0]] = x[:, 1:]
    seq = torch.cat([x[:, :1], full], dim=1) + state["decoder_pos_embed"]
    depth = len({k.split(".")[1] for k in state if k.startswith("decoder_blocks.")})
    for i in range(depth):
        block = Block(512, 16, 4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
        prefix = f"decoder_blocks.{i}."
        block.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
        seq = block.eval()(seq)
    seq = torch.nn.functional.layer_norm(
        seq, (512,), state["decoder_norm.weight"], state["decoder_norm.bias"], eps=1e-6
    )
    pred = torch.nn.functional.linear(seq, state["decoder_pred.weight"], state["decoder_pred.bias"])
    return pred[:, 1:]


def test_mae_patch_order_is_upstreams() -> None:
    """Upstream ``patchify`` orders a patch's values (p, q, c) (``einsum('nchpwq->nhwpqc')``),
    as ours does: the release's ``decoder_pred`` rows need no permutation."""
    x = torch.randn(2, 13, 32, 32)
    upstream = torch.einsum("nchpwq->nhwpqc", x.reshape(2, 13, 2, 16, 2, 16))
    grid = TokenGrid.from_input((32, 32), 16)
    torch.testing.assert_close(patchify(x, grid), upstream.reshape(2, 4, 16 * 16 * 13))


def test_ssl4eo_mae_wrong_layout_names_the_file(tmp_path: Path) -> None:
    encoder = _small_mae_encoder()
    path = tmp_path / "B13_vits16_mae_ep99_enc.pth"
    torch.save(encoder.state_dict(), path)  # the encoder alone is TorchGeo's layout
    with pytest.raises(ValueError, match=r"B13_vits16_mae_ep99_enc\.pth does not have the key"):
        load_released(MAE_NAME, path, model_kwargs={"depth": 2, "grid_size": 2})
    ckpt = _mae_checkpoint(encoder, decoder_depth=1, grid=2)
    ckpt["model"]["blocks.1.attn.qkv_v2.weight"] = ckpt["model"].pop("blocks.1.attn.qkv.weight")
    torch.save(ckpt, path)
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.1\.attn\.qkv\.weight"):
        load_released(MAE_NAME, path, model_kwargs={"depth": 2, "grid_size": 2})


def test_strict_layouts_full_size() -> None:
    """Every entry on its full-size file (meta device): all loaded, nothing missing or
    unexpected, the pretraining parts dropped by name."""
    resnet = len(_without(_timm_state("resnet50", "meta"), "fc."))
    expected_dropped = {
        **dict.fromkeys((*RN50_NAMES, *VIT_NAMES), 0),
        # encoder_q's MLP head, encoder_k with its head, queue and queue_ptr
        "ssl4eo-s12-resnet50-moco": 4 + (resnet + 4) + 2,
        "ssl4eo-s12-vit-small-patch16-dino": 5,  # DINOHead
        "ssl4eo-s12-resnet50-dino": 5,
        # decoder_embed, 8 blocks, decoder_norm, decoder_pred, mask_token, decoder_pos_embed
        MAE_NAME: 2 + 8 * 12 + 2 + 2 + 1 + 1,
    }
    assert set(expected_dropped) == set(LAYOUT_FILES)
    for name, build in LAYOUT_FILES.items():
        content, _ = build("meta")
        entry = RELEASED.get(name)
        state, dropped = mapped_release_state(entry, content, path=name)
        with torch.device("meta"):
            model = build_backbone(entry.architecture, entry.kwargs)
        report = compare_state_dict(model, state)
        assert report.ok and len(report.loaded) == len(model.state_dict()), (name, report)
        assert len(dropped) == expected_dropped[name], (name, dropped[:5])


def _timm_state(name: str, device: str, **kwargs: Any) -> dict[str, Tensor]:
    with torch.device(device):
        return timm.create_model(name, pretrained=False, in_chans=13, **kwargs).state_dict()


def _on(device: str, build: Callable[[], Any], suffix: str = ".pth") -> tuple[Any, str]:
    with torch.device(device):
        return build(), suffix


def _timm_on(name: str, device: str) -> nn.Module:
    with torch.device(device):
        return timm.create_model(name, pretrained=False, in_chans=13)


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    **dict.fromkeys(RN50_NAMES, lambda d: (_without(_timm_state("resnet50", d), "fc."), ".pth")),
    **dict.fromkeys(
        VIT_NAMES, lambda d: (_without(_timm_state("vit_small_patch16_224", d), "head."), ".pth")
    ),
    "ssl4eo-s12-resnet50-moco": lambda d: _on(
        d, lambda: _moco_checkpoint(_timm_on("resnet50", d), queue=65536)
    ),
    "ssl4eo-s12-vit-small-patch16-dino": lambda d: _on(
        d, lambda: _dino_checkpoint(_timm_on("vit_small_patch16_224", d), "", out_dim=65536)
    ),
    "ssl4eo-s12-resnet50-dino": lambda d: _on(
        d, lambda: _dino_checkpoint(_timm_on("resnet50", d), "module.", out_dim=65536)
    ),
    MAE_NAME: lambda d: _on(d, lambda: _mae_checkpoint(_timm_on("vit_small_patch16_224", d))),
}
"""Each release's file content at full size in its real nesting (see tests/pretrained/
test_identify.py)."""

IDENTICAL_LAYOUTS = (frozenset({*RN50_NAMES, "softcon-rn50-s2"}), frozenset(VIT_NAMES))
"""TorchGeo's MoCo and DINO ResNet-50 files share one layout (a plain 13-band timm ResNet-50
state dict, as SoftCon's RN50 file), as do its three ViT-S/16 files: a file alone cannot tell
them apart (``inspect`` lists them together)."""
