"""Exports and checkpoints written by domainfm 0.1 (commit 59b080c, before the layering and
domain-plugin refactor) still load and run with the current code.

The fixtures under tests/fixtures/legacy_0_1/ were written by the 0.1 code itself (see its
``make_fixtures.py``): a tiny MAE-pretrained 3D ViT export, and two ``FinetuneModule``
segmentation checkpoints (CT volume, Sentinel-2 raster) whose input contracts are 0.1's plain
dicts without a ``"kind"`` key; :func:`~domainfm.core.contract.contract_from_dict` must
recognize them by their legacy keys.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import domainfm
from domainfm.core.contract import contract_from_dict
from domainfm.domains.geospatial import RasterContract
from domainfm.domains.medical3d import VolumeContract
from domainfm.tasks.finetune_module import FinetuneModule, load_finetuned

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_0_1"
EXPORT = FIXTURES / "export_vit3d"
SEG_CT = FIXTURES / "seg_ct.pt"
SEG_S2 = FIXTURES / "seg_s2.pt"
# the CT volume of configs/medical3d/mae_quickstart.yaml, and a scene of the LULC configs
CT = "medical/totalsegmentator_examples/ct_labeled/example_ct_sm.nii.gz"
S2_SCENE = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band/S2_L1C_2015-07-31.tif"
S2_MEAN = [0.1371170336778211, 0.1217463267728834, 0.103773081252001, 0.28407651290061453]
S2_STD = [0.08788499048860245, 0.08399607962715061, 0.09383698845510133, 0.07571448336625419]


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """``python -m domainfm.cli ARGS`` in a fresh process; its stdout (asserts exit 0)."""
    proc = subprocess.run(
        [sys.executable, "-m", "domainfm.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc.stdout


def test_fixtures_were_written_by_0_1() -> None:
    """Guard: the files are genuine 0.1 output (contracts without ``"kind"``)."""
    config = json.loads((EXPORT / "config.json").read_text())
    assert config["provenance"]["domainfm_version"] == "0.1.0"
    assert config["format"] == "domainfm.backbone" and config["format_version"] == 1
    assert config["domain"] == "medical3d"
    for meta in (
        config,
        *(
            torch.load(p, map_location="cpu", weights_only=True)["domainfm"]
            for p in (SEG_CT, SEG_S2)
        ),
    ):
        assert "kind" not in meta["input"], meta["input"]


def test_legacy_export_loads_clean_and_runs() -> None:
    model, report = domainfm.load_backbone(EXPORT)
    assert report.ok and not report.resampled and not report.adapted, report
    assert len(report.loaded) == len(model.state_dict())
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 16)


def test_legacy_export_contract_is_a_volume_contract() -> None:
    recorded = json.loads((EXPORT / "config.json").read_text())["input"]
    contract = contract_from_dict(recorded, source=str(EXPORT))
    assert isinstance(contract, VolumeContract)
    assert contract.modality == "ct" and contract.spacing == (3.0, 3.0, 3.0)
    assert contract.crop_size == [32, 32, 32] and contract.channels == ["image"]
    assert contract.normalization == recorded["normalization"]
    hu = torch.tensor([[-2000.0, 0.0, 1000.0]])
    torch.testing.assert_close(contract.normalize(hu), torch.tensor([[0.0, 0.5, 1.0]]))


def test_legacy_export_fine_tunes() -> None:
    """``FinetuneModule(pretrained=<0.1 export>)`` rebuilds and loads the backbone."""
    module = FinetuneModule(
        task="segmentation", num_classes=2, decoder_dim=8, num_maps=1, pretrained=str(EXPORT)
    ).eval()
    reference, _ = domainfm.load_backbone(EXPORT)
    for key, value in reference.state_dict().items():
        assert torch.equal(module.backbone.state_dict()[key], value), key
    with torch.no_grad():
        assert module(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)


def test_inspect_legacy_export_exits_0(tmp_path: Path) -> None:
    out = _cli("inspect", str(EXPORT), cwd=tmp_path)
    assert "clean" in out and "NOT clean" not in out, out[-2000:]


@pytest.mark.parametrize(
    ("path", "kind", "num_classes", "shape"),
    [
        (SEG_CT, VolumeContract, 2, (1, 1, 32, 32, 32)),
        (SEG_S2, RasterContract, 6, (1, 4, 32, 32)),
    ],
    ids=["ct", "s2"],
)
def test_legacy_seg_checkpoint_loads(
    path: Path, kind: type, num_classes: int, shape: tuple[int, ...]
) -> None:
    """``load_finetuned`` rebuilds the 0.1 model strictly; its contract reads as typed."""
    module, meta = load_finetuned(path)
    assert module.task == "segmentation" and module.num_classes == num_classes
    contract = contract_from_dict(meta["input"], source=str(path))
    assert isinstance(contract, kind)
    with torch.no_grad():
        logits = module(torch.zeros(shape))
    assert logits.shape == (1, num_classes, *shape[2:])


def test_legacy_ct_contract_fields() -> None:
    _, meta = load_finetuned(SEG_CT)
    contract = contract_from_dict(meta["input"])
    assert isinstance(contract, VolumeContract)
    assert contract.modality == "ct" and contract.spacing == (3.0, 3.0, 3.0)
    assert contract.crop_size == [32, 32, 32] and contract.channels == 1
    assert contract.window == (-1000.0, 1000.0)
    assert contract.class_names == ["background", "liver"]
    assert contract.extra["label_map"] == {"5": 1}  # 0.1 keys the contract does not model


def test_legacy_raster_contract_fields() -> None:
    _, meta = load_finetuned(SEG_S2)
    contract = contract_from_dict(meta["input"])
    assert isinstance(contract, RasterContract)
    assert contract.bands == ["B02", "B03", "B04", "B08"] and contract.window == 32
    assert contract.class_names is not None and len(contract.class_names) == 6
    mean, std = contract.moments()
    np.testing.assert_allclose(mean, S2_MEAN, rtol=1e-6)
    np.testing.assert_allclose(std, S2_STD, rtol=1e-6)


def test_legacy_seg_checkpoint_backbone_loads_as_ckpt(tmp_path: Path) -> None:
    """The backbone of a 0.1 fine-tuning checkpoint loads through ``load_backbone`` (which
    reads training checkpoints by their ``.ckpt`` suffix)."""
    ckpt = tmp_path / "seg_ct.ckpt"
    shutil.copyfile(SEG_CT, ckpt)
    model, report = domainfm.load_backbone(ckpt)
    assert report.ok, report
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 16)


def test_segment_ct_with_legacy_checkpoint(tmp_path: Path, data_root: Path) -> None:
    """``domainfm segment`` with a 0.1 checkpoint: a NIfTI label map on the input's grid."""
    import nibabel as nib

    ct = data_root / CT
    out = tmp_path / "seg.nii.gz"
    env = {**os.environ, "DOMAINFM_DATA": str(data_root)}
    args = ("segment", str(SEG_CT), str(ct), str(out), "--roi-size", "32", "32", "32")
    _cli(*args, "--no-progress", cwd=tmp_path, env=env)
    source, written = nib.load(ct), nib.load(out)
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
    labels = np.asarray(written.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) <= {0, 1}


def test_segment_raster_with_legacy_checkpoint(tmp_path: Path, data_root: Path) -> None:
    """``domainfm segment`` with a 0.1 raster checkpoint: the 4 bands picked by name from a
    13-band scene, a GeoTIFF with the input's CRS, transform and size."""
    import rasterio

    scene = data_root / S2_SCENE
    out = tmp_path / "seg.tif"
    env = {**os.environ, "DOMAINFM_DATA": str(data_root)}
    _cli("segment", str(SEG_S2), str(scene), str(out), "--no-progress", cwd=tmp_path, env=env)
    with rasterio.open(scene) as src, rasterio.open(out) as pred:
        assert pred.crs == src.crs and pred.transform == src.transform
        assert (pred.width, pred.height) == (src.width, src.height)
        labels = pred.read(1)
    assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) <= set(range(6))
