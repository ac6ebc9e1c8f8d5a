"""Released Models Genesis and SuPreM U-Net weights load strictly into UNet3DEncoder.

No upstream code installs (ModelsGenesis and SuPreM are research repositories), so the
release files are written from the key names and shapes of their ``UNet3D``
(``pytorch/unet3d.py`` / ``backbone/unet.py``, listed below independently of our module), in
the releases' nesting; full-size on the meta device for names and shapes, shrunk
(``base_channels=4``) on the CPU for numbers, which are checked against a functional forward
written from that code (conv → batch-statistics BatchNorm → ReLU, twice per level, max pool
between levels).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from domainfm.domains.medical3d.unet3d import UNet3DEncoder
from domainfm.pretrained import CheckpointMismatchError, load_released
from domainfm.pretrained.registry import RELEASED, mapped_release_state
from domainfm.pretrained.report import compare_state_dict

SMALL = {"base_channels": 4}


def _luconv(prefix: str, cin: int, cout: int) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of one upstream LUConv(cin, cout) (Conv3d k3 with bias, BatchNorm)."""
    return {
        f"{prefix}.conv1.weight": (cout, cin, 3, 3, 3),
        f"{prefix}.conv1.bias": (cout,),
        **{f"{prefix}.bn1.{n}": (cout,) for n in ("weight", "bias", "running_mean", "running_var")},
        f"{prefix}.bn1.num_batches_tracked": (),
    }


def upstream_unet3d_shapes(b: int = 32, *, head: bool = True) -> dict[str, tuple[int, ...]]:
    """``UNet3D(n_class=1)``'s state-dict shapes with ``b`` for the code's hard-wired 32."""
    shapes: dict[str, tuple[int, ...]] = {}
    cin = 1
    for d, name in enumerate(("down_tr64", "down_tr128", "down_tr256", "down_tr512")):
        shapes |= _luconv(f"{name}.ops.0", cin, b * 2**d)
        shapes |= _luconv(f"{name}.ops.1", b * 2**d, 2 * b * 2**d)
        cin = 2 * b * 2**d
    for d, name in ((2, "up_tr256"), (1, "up_tr128"), (0, "up_tr64")):
        ch = 4 * b * 2**d  # UpTransition(inChans=outChans=ch, depth d)
        shapes[f"{name}.up_conv.weight"] = (ch, ch, 2, 2, 2)
        shapes[f"{name}.up_conv.bias"] = (ch,)
        shapes |= _luconv(f"{name}.ops.0", ch + ch // 2, 2 * b * 2**d)
        shapes |= _luconv(f"{name}.ops.1", 2 * b * 2**d, 2 * b * 2**d)
    if head:
        shapes["out_tr.final_conv.weight"] = (1, 2 * b, 1, 1, 1)
        shapes["out_tr.final_conv.bias"] = (1,)
    return shapes


def _tensors(shapes: dict[str, tuple[int, ...]], device: str, seed: int = 0) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for key, shape in shapes.items():
        if device == "meta" or key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=torch.long if not shape else None, device=device)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(shape, generator=gen) * 0.3
    return out


SUPREM_HEADS = {  # backbone/Universal_model.py, backbone='unet', encoding='word_embedding'
    "precls_conv.0.weight": (64,),
    "precls_conv.0.bias": (64,),
    "precls_conv.2.weight": (8, 64, 1, 1, 1),
    "precls_conv.2.bias": (8,),
    "GAP.0.weight": (512,),
    "GAP.0.bias": (512,),
    "GAP.3.weight": (256, 512, 1, 1, 1),
    "GAP.3.bias": (256,),
    "controller.weight": (153, 512, 1, 1, 1),  # 8*8 + 8*8 + 8*1 weights + 8 + 8 + 1 biases
    "controller.bias": (153,),
    "organ_embedding": (32, 512),  # NUM_CLASS organs x CLIP text width
    "text_to_vision.weight": (256, 512),
    "text_to_vision.bias": (256,),
}


def genesis_file(device: str, b: int = 32) -> tuple[Any, str]:
    """``Genesis_Chest_CT.pt``: DataParallel keys under ``state_dict`` (with the head)."""
    state = _tensors(upstream_unet3d_shapes(b), device)
    return {"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}}, ".pt"


def suprem_file(device: str, b: int = 32) -> tuple[Any, str]:
    """``supervised_suprem_unet_2100.pth``: DDP ``Universal_model`` keys under ``net``."""
    state = _tensors(upstream_unet3d_shapes(b, head=False), device)
    heads = _tensors(SUPREM_HEADS, device, seed=1)
    net = {f"module.backbone.{k}": v for k, v in state.items()}
    net |= {f"module.{k}": v for k, v in heads.items()}
    return {"net": net, "epoch": 800}, ".pth"


LAYOUT_FILES: dict[str, Callable[[str], tuple[Any, str]]] = {
    "models-genesis-unet3d": genesis_file,
    "suprem-unet": suprem_file,
}


@pytest.mark.parametrize("name", sorted(LAYOUT_FILES))
def test_full_size_layout_maps_strictly(name: str) -> None:
    content, _ = LAYOUT_FILES[name]("meta")
    entry = RELEASED.get(name)
    state, dropped = mapped_release_state(entry, content, path=name)
    with torch.device("meta"):
        model = UNet3DEncoder(**entry.kwargs)
    report = compare_state_dict(model, state, source=name)
    assert report.ok and not report.unexpected
    encoder = [k for k in upstream_unet3d_shapes() if k.startswith("down_tr")]
    assert sorted(report.loaded) == sorted(encoder) and len(encoder) == 8 * 7
    assert tuple(state["down_tr64.ops.0.conv1.weight"].shape) == (32, 1, 3, 3, 3)
    assert tuple(state["down_tr512.ops.1.conv1.weight"].shape) == (512, 256, 3, 3, 3)
    up = [k for k in upstream_unet3d_shapes(head=False) if k.startswith("up_tr")]
    if name == "models-genesis-unet3d":
        assert dropped == sorted([*up, "out_tr.final_conv.weight", "out_tr.final_conv.bias"])
    else:
        assert dropped == sorted([*up, *SUPREM_HEADS])
    assert model.feature_channels == (64, 128, 256, 512) and model.feature_strides == (1, 2, 4, 8)


def _genesis_forward(s: dict[str, Tensor], x: Tensor) -> list[Tensor]:
    """The down path of upstream ``UNet3D.forward``: per level LUConv twice (conv, then
    ``F.batch_norm`` with ``training=True`` as ``ContBatchNorm3d`` does, then ReLU); the map
    before each 2x2x2 max pool is the skip (the last level has no pool)."""
    maps = []
    for d, name in enumerate(("down_tr64", "down_tr128", "down_tr256", "down_tr512")):
        if d:
            x = F.max_pool3d(x, 2)
        for u in (0, 1):
            p = f"{name}.ops.{u}"
            x = F.conv3d(x, s[f"{p}.conv1.weight"], s[f"{p}.conv1.bias"], padding=1)
            mean = x.mean(dim=(0, 2, 3, 4), keepdim=True)
            var = x.var(dim=(0, 2, 3, 4), unbiased=False, keepdim=True)
            w = s[f"{p}.bn1.weight"].view(1, -1, 1, 1, 1)
            b = s[f"{p}.bn1.bias"].view(1, -1, 1, 1, 1)
            x = torch.relu((x - mean) / torch.sqrt(var + 1e-5) * w + b)
        maps.append(x)
    return maps


@pytest.mark.parametrize("name", sorted(LAYOUT_FILES))
def test_release_loads_and_computes_the_down_path(tmp_path: Path, name: str) -> None:
    builder = genesis_file if name == "models-genesis-unet3d" else suprem_file
    content, suffix = builder("cpu", 4)
    path = tmp_path / f"release{suffix}"
    torch.save(content, path)
    model, report = load_released(name, path, model_kwargs=SMALL)
    assert report.ok and len(report.loaded) == 8 * 7 and report.dropped
    inner = content["state_dict" if "state_dict" in content else "net"]
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in inner.items()}
    x = torch.randn(2, 1, 16, 16, 8)
    with torch.no_grad():
        ours = model.eval().forward_intermediates(x)  # batch statistics in eval, as upstream
        ref = _genesis_forward(state, x)
    assert [tuple(m.shape[1:]) for m in ours] == [
        (8, 16, 16, 8), (16, 8, 8, 4), (32, 4, 4, 2), (64, 2, 2, 1),
    ]  # fmt: skip
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_wrong_layout_fails_naming_keys_and_file(tmp_path: Path) -> None:
    genesis, _ = genesis_file("cpu", 4)
    suprem, _ = suprem_file("cpu", 4)
    torch.save(genesis, tmp_path / "Genesis_Chest_CT.pt")
    torch.save(suprem, tmp_path / "suprem.pth")
    with pytest.raises(ValueError, match=r"suprem\.pth does not have the key layout of "):
        load_released("models-genesis-unet3d", tmp_path / "suprem.pth", model_kwargs=SMALL)
    with pytest.raises(ValueError, match=r"Genesis_Chest_CT\.pt does not have the key layout"):
        load_released("suprem-unet", tmp_path / "Genesis_Chest_CT.pt", model_kwargs=SMALL)
    # a Models Genesis file with one encoder key renamed: both names are reported
    state = genesis["state_dict"]
    state["module.down_tr128.ops.1.conv.weight"] = state.pop("module.down_tr128.ops.1.conv1.weight")
    torch.save(genesis, tmp_path / "renamed.pt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_released("models-genesis-unet3d", tmp_path / "renamed.pt", model_kwargs=SMALL)
    assert info.value.report.missing == ["down_tr128.ops.1.conv1.weight"]
    assert info.value.report.unexpected == ["down_tr128.ops.1.conv.weight"]
    # the full-size release into a shrunk model: shapes named
    full, _ = genesis_file("cpu", 8)
    torch.save(full, tmp_path / "wide.pt")
    with pytest.raises(CheckpointMismatchError, match=r"mismatched.*down_tr64\.ops\.0\.conv1"):
        load_released("models-genesis-unet3d", tmp_path / "wide.pt", model_kwargs=SMALL)


def test_entries_record_the_input_contracts() -> None:
    genesis = RELEASED.get("models-genesis-unet3d").input
    assert genesis["hu_window"] == [-1000.0, 1000.0] and genesis["crop_size"] == [64, 64, 32]
    suprem = RELEASED.get("suprem-unet").input
    assert suprem["hu_window"] == [-175.0, 250.0] and suprem["spacing_mm"] == [1.5, 1.5, 1.5]
    assert suprem["crop_size"] == [96, 96, 96] and suprem["orientation"] == "RAS"
