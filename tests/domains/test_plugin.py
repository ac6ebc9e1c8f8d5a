"""A domain registered from the test folder only runs ``prepare`` and ``segment`` through the
real CLI entry point, which names no domain."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from domainfm.cli import main
from domainfm.core.contract import CONTRACTS, contract_from_dict
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.plugin import DOMAINS, all_domains, check_output, get_domain
from domainfm.tasks.finetune_module import FinetuneModule

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def toy() -> Iterator[object]:
    """Import the toy domain (it registers itself) and unregister it afterwards."""
    sys.path.insert(0, str(HERE))  # spawned prepare workers import it by this path too
    try:
        import toy_domain

        yield toy_domain
    finally:
        DOMAINS.remove("toy")
        CONTRACTS.remove("toy_signal")
        sys.modules.pop("toy_domain", None)
        sys.path.remove(str(HERE))


class _ToySegData(L.LightningDataModule):
    """Two-class 1D segmentation: label 1 where the signal is positive."""

    def __init__(self, contract: object) -> None:
        super().__init__()
        self.contract = contract

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8, 1, 32, generator=g)
        samples = [{"input": xi, "label": (xi[0] > 0).long()} for xi in x]
        return DataLoader(samples, batch_size=4)

    def input_contract(self) -> object:
        return self.contract


def _finetuned_checkpoint(toy: object, path: Path) -> Path:
    backbone = VisionTransformerND(
        in_chans=1, spatial_dims=1, patch_size=4, embed_dim=16, depth=1, num_heads=2
    )
    module = FinetuneModule(backbone=backbone, task="segmentation", num_classes=2)
    data = _ToySegData(toy.ToySignalContract(window=32, scale=2.0))  # type: ignore[attr-defined]
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=path.parent,
    )
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(path)
    return path


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return int(exit_info.value.code or 0)


def test_toy_domain_prepares_and_segments_through_the_cli(
    toy: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "toy" in [p.name for p in all_domains()]
    assert _run(["--help"]) == 0
    assert "1D toy signals" in capsys.readouterr().out

    src = tmp_path / "raw"
    src.mkdir()
    rng = np.random.default_rng(0)
    np.save(src / "a.npy", rng.normal(size=40).astype(np.float32))
    np.save(src / "b.npy", np.array([1.0, np.nan, 2.0] * 10, np.float32))  # refused by name
    out = tmp_path / "prepared"
    code = _run(["prepare", "toy", str(src), str(out), "--window", "8", "--num-workers", "1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["domain"] == "toy" and manifest["settings"] == {"window": 8}
    assert "b.npy" in printed and "not a finite 1D signal" in printed
    statuses = {s["files"][0]["path"]: s["status"] for s in manifest["sources"].values()}
    assert statuses == {"a.npy": "ok", "b.npy": "skipped"}

    ckpt = _finetuned_checkpoint(toy, tmp_path / "seg.ckpt")
    signal = rng.normal(size=48).astype(np.float32)
    np.save(tmp_path / "signal.npy", signal)
    labels_path = tmp_path / "labels.npy"
    assert _run(["segment", str(ckpt), str(tmp_path / "signal.npy"), str(labels_path)]) == 0
    assert "domainfm segment: wrote" in capsys.readouterr().out
    labels = np.load(labels_path)
    assert labels.shape == signal.shape and set(np.unique(labels)) <= {0, 1}

    meta = torch.load(ckpt, weights_only=True)["domainfm"]
    assert meta["input"]["kind"] == "toy_signal"
    assert get_domain("toy").name == "toy"


def test_segment_refuses_an_unknown_domain_and_overwriting_its_input(
    toy: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _finetuned_checkpoint(toy, tmp_path / "seg.ckpt")
    signal = tmp_path / "signal.npy"
    np.save(signal, np.zeros(32, np.float32))
    assert _run(["segment", str(ckpt), str(signal), str(signal)]) == 2
    assert "the output is the input" in capsys.readouterr().err
    assert np.load(signal).shape == (32,)  # the input is untouched
    other = str(tmp_path / "o.npy")
    assert _run(["segment", str(ckpt), str(signal), other, "--domain", "nope"]) == 2
    assert "unknown domain 'nope'" in capsys.readouterr().err


def test_contract_round_trip_and_unknown_kind(toy: object) -> None:
    contract = toy.ToySignalContract(window=16, scale=3.0, extra={"note": 1})  # type: ignore[attr-defined]
    again = contract_from_dict(contract.to_dict())
    assert again == contract and again.to_dict()["note"] == 1
    with pytest.raises(ValueError, match="kind 'martian'"):
        contract_from_dict({"kind": "martian"}, source="m.ckpt")
    with pytest.raises(ValueError, match="needs window"):
        contract_from_dict({"kind": "toy_signal"}, source="m.ckpt")


def test_segment_checks_its_output_before_any_computation(
    toy: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _finetuned_checkpoint(toy, tmp_path / "seg.ckpt")
    signal = tmp_path / "signal.npy"
    np.save(signal, np.zeros(32, np.float32))
    existing = tmp_path / "labels.npy"
    existing.write_bytes(b"keep me")
    link = tmp_path / "link.npy"
    link.symlink_to(signal)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cases = {
        str(existing): "the output exists",
        str(link): "the output is the input",
        str(tmp_path / "labels.txt"): "unsupported output format; use one of .npy",
        str(blocker / "out.npy"): "is a file, not a folder",
        str(tmp_path): "is an existing folder",
    }
    for output, message in cases.items():
        assert _run(["segment", str(ckpt), str(signal), output]) == 2, output
        err = capsys.readouterr().err
        assert message in err and Path(output).name in err, (output, err)
    assert existing.read_bytes() == b"keep me" and np.load(signal).shape == (32,)
    assert _run(["segment", str(ckpt), str(signal), str(existing), "--overwrite"]) == 0
    assert np.load(existing).shape == (32,)


def test_check_output_refuses_an_unwritable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root ignores permissions
            pytest.skip("running as a user that can write anywhere")
        with pytest.raises(ValueError, match="is not writable"):
            check_output(folder / "new" / "out.npy", inputs=[])
    finally:
        folder.chmod(0o700)
