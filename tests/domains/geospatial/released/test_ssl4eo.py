"""SSL4EO-S12 Sentinel-2 releases: files with the real key layouts (built from timm models with
13 input bands, no download) load strictly and give timm's numbers; stray or missing keys fail
loudly; a 13-band release maps by band name into 4- and 10-band models; the contracts are the
releases' own (checked against TorchGeo's weight enums when TorchGeo is installed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from torch import Tensor, nn

import domainfm.domains.geospatial  # noqa: F401 - registers the releases
from domainfm.domains.geospatial.raster_header import SENTINEL2_L1C_BANDS
from domainfm.pretrained.registry import RELEASED, load_released
from domainfm.pretrained.report import CheckpointMismatchError

RN50_NAMES = ("torchgeo-resnet50-sentinel2-all-moco", "torchgeo-resnet50-sentinel2-all-dino")
VIT_NAMES = (
    "torchgeo-vit-small-patch16-224-sentinel2-all-moco",
    "torchgeo-vit-small-patch16-224-sentinel2-all-dino",
)
ORIGINAL_NAMES = (
    "ssl4eo-s12-resnet50-moco",
    "ssl4eo-s12-vit-small-patch16-dino",
    "ssl4eo-s12-resnet50-dino",
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
    assert load_released(name, path)[1].ok


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


def _moco_checkpoint(ref: nn.Module) -> dict[str, Any]:
    """``B13_rn50_moco_0099_ckpt.pth`` as pretrain_moco_v2_s2c.py saves it (DDP MoCo, --mlp)."""
    encoder = _without(ref.state_dict(), "fc.")
    state: dict[str, Tensor] = {f"module.encoder_q.{k}": v for k, v in encoder.items()}
    mlp = {"fc.0.weight": (2048, 2048), "fc.0.bias": (2048,), "fc.2.weight": (128, 2048)}
    mlp["fc.2.bias"] = (128,)
    for branch in ("encoder_q", "encoder_k"):
        state.update({f"module.{branch}.{k}": torch.randn(s) for k, s in mlp.items()})
    state.update({f"module.encoder_k.{k}": v + 1 for k, v in encoder.items()})
    state["module.queue"] = torch.randn(128, 512)  # (dim, K); K=65536 in the release
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {"epoch": 100, "arch": "resnet50", "state_dict": state, "optimizer": {}}


def test_ssl4eo_moco_resnet50_full_checkpoint(rn50: nn.Module, tmp_path: Path) -> None:
    ckpt = _moco_checkpoint(rn50)
    path = tmp_path / "B13_rn50_moco_0099_ckpt.pth"
    torch.save(ckpt, path)
    model, report = load_released("ssl4eo-s12-resnet50-moco", path)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    _same_resnet_features(model, rn50)  # encoder_q, not the (shifted) encoder_k
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
    _same_vit_tokens(model, vits)


def test_ssl4eo_dino_resnet50_reads_the_ddp_teacher(rn50: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "B13_rn50_dino_0099_ckpt.pth"
    torch.save(_dino_checkpoint(rn50, teacher_prefix="module."), path)  # BatchNorm: DDP
    model, report = load_released("ssl4eo-s12-resnet50-dino", path)
    assert report.ok and len(report.loaded) == len(model.state_dict())
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
    weights = enum["SENTINEL2_ALL_DINO" if name.endswith("dino") else "SENTINEL2_ALL_MOCO"]
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
