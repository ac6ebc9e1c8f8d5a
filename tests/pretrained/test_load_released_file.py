"""``load_backbone`` takes a released weights file as published, identified by its layout: the
release and its input contract reach the caller (``report.released`` / ``candidates`` /
``input``); identical layouts load only when every release they fit loads them alike;
a file no release fits is refused naming the closest layouts; never a partial load."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import Tensor

import domainfm
import domainfm.domains.audio  # registers the releases
from domainfm.core.checkpoint_io import UnsafeCheckpointError
from domainfm.domains.audio.ntt import AudioNTT2020
from domainfm.domains.audio.released.byola import BYOLA_FRONTEND
from domainfm.pretrained.load import load_backbone, map_input_channels, pos_embed_resampler
from domainfm.pretrained.registry import RELEASED, load_released, released_checkpoint
from domainfm.pretrained.release_file import identify_for_loading, read_release_content

BYOLA = "byola-audiontt2020-d512"
TESTS = Path(__file__).resolve().parents[1]


def byola_file(folder: Path, name: str = "AudioNTT2020-BYOLA-64x96d512.pth") -> Path:
    """BYOL-A's d512 release file as published (a plain AudioNTT2020 state dict, 5 M
    parameters), random weights."""
    torch.manual_seed(0)
    state = AudioNTT2020(n_mels=64, d=512).state_dict()
    path = folder / name
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif path.suffix == ".ckpt":
        torch.save({"state_dict": state}, path)  # BYOL-A's loader takes this wrapper too
    else:
        torch.save(state, path)
    return path


def test_adaptations_stay_importable_from_load() -> None:
    from domainfm.pretrained import adapt

    assert pos_embed_resampler is adapt.pos_embed_resampler
    assert map_input_channels is adapt.map_input_channels


@pytest.mark.parametrize("name", ["byola.pth", "byola.ckpt", "byola.safetensors"])
def test_a_release_file_loads_without_naming_it(tmp_path: Path, name: str) -> None:
    path = byola_file(tmp_path, name)
    model, report = domainfm.load_backbone(path)
    assert isinstance(model, AudioNTT2020) and report.ok and not report.missing
    assert (report.released, report.candidates) == (BYOLA, [BYOLA])
    assert report.input == dict(RELEASED.get(BYOLA).input)
    assert report.input["frontend"] == BYOLA_FRONTEND
    assert f"release: {BYOLA}" in str(report)
    assert report.as_dict()["released"] == BYOLA
    reference, _ = load_released(BYOLA, path)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_released_names_the_release_and_skips_identification(tmp_path: Path) -> None:
    path = byola_file(tmp_path)
    _, report = load_backbone(path, released=BYOLA)
    assert (report.released, report.candidates, report.input) == (
        BYOLA,
        [BYOLA],
        dict(RELEASED.get(BYOLA).input),
    )


def test_an_export_reports_its_recorded_contract() -> None:
    export = TESTS / "fixtures/legacy_0_1/export_vit3d"
    _, report = load_backbone(export)
    assert report.released is None and report.candidates == []
    config = json.loads((export / "config.json").read_text())
    assert report.input == config["input"] and report.input["modality"] == "ct"


def test_a_file_no_release_fits_is_refused_naming_the_closest(tmp_path: Path) -> None:
    path = byola_file(tmp_path)
    state = torch.load(path, weights_only=True)
    state["fc.3.weight_renamed"] = state.pop("fc.3.weight")
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        load_backbone(path)
    text = str(info.value)
    assert text.startswith(f"{path} is no domainfm export or checkpoint")
    assert f"closest layouts: {BYOLA}: 24 of 25 tensors fit" in text
    assert "fc.3.weight" in text and "fc.3.weight_renamed" in text
    assert "released=NAME" in text
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match=r"other\.pt .*no registered release layout is close"):
        load_backbone(other)


def test_unreadable_and_code_running_files_are_refused_naming_them(tmp_path: Path) -> None:
    garbage = tmp_path / "noise.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"noise\.pth is not a readable torch checkpoint"):
        load_backbone(garbage)

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (print, ("PAYLOAD RAN",))

    evil = tmp_path / "evil.pth"
    torch.save({"w": Payload()}, evil)
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*evil\.pth"):
        load_backbone(evil)


def test_a_domainfm_checkpoint_is_not_taken_for_a_release(tmp_path: Path) -> None:
    """A ``.ckpt`` with domainfm metadata goes to the domainfm reader (its errors)."""
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": {}, "domainfm": {"x": 1}}, path)
    assert read_release_content(path) is None
    with pytest.raises(ValueError, match=r"run\.ckpt has no 'domainfm' metadata"):
        load_backbone(path)


# -- identical layouts -------------------------------------------------------------------

TINY = {"n_mels": 64, "d": 16}
_AUDIO = {
    "kind": "audio",
    "sample_rate": 16000,
    "frames": 96,
    "frontend": BYOLA_FRONTEND,
}


def _online(content: Mapping[str, Any]) -> dict[str, Tensor]:
    return dict(content["online"])


def _target(content: Mapping[str, Any]) -> dict[str, Tensor]:
    return dict(content["target"])


@pytest.fixture
def twins() -> Iterator[None]:
    """Toy releases of one layout: two that load it alike, one with another contract, one
    reading other weights of the same file."""
    other_stats = {**BYOLA_FRONTEND, "kwargs": {**BYOLA_FRONTEND["kwargs"], "mean": -5.0}}
    specs = {
        "toy-twin-a": (_AUDIO, _online),
        "toy-twin-b": (_AUDIO, _online),
        "toy-twin-other-contract": ({**_AUDIO, "frontend": other_stats}, _online),
        "toy-twin-target": (_AUDIO, _target),
    }
    for name, (contract, key_map) in specs.items():
        released_checkpoint(
            name=name,
            architecture="audio_ntt2020",
            kwargs=TINY,
            source_layout="{'online': AudioNTT2020 d16, 'target': its copy}",
            input=contract,
            license="MIT",
        )(key_map)
    yield
    for name in specs:
        RELEASED.remove(name)


def _twin_file(path: Path) -> Path:
    torch.manual_seed(1)
    online = AudioNTT2020(**TINY).state_dict()
    target = {k: v + 1 if v.is_floating_point() else v for k, v in online.items()}
    torch.save({"online": online, "target": target}, path)
    return path


@contextmanager
def _only(*names: str) -> Iterator[None]:
    """Leave only ``names`` of the toy releases registered (the others removed and put back)."""
    toys = [n for n in RELEASED if n.startswith("toy-twin-")]
    removed = {n: RELEASED.remove(n) for n in toys if n not in names}
    yield
    for name, entry in removed.items():
        RELEASED.register(name)(entry)


def test_releases_that_load_a_file_alike_are_all_named(twins: None, tmp_path: Path) -> None:
    path = _twin_file(tmp_path / "twin.pth")
    with _only("toy-twin-a", "toy-twin-b"):
        model, report = load_backbone(path)
    assert (report.released, report.candidates) == ("toy-twin-a", ["toy-twin-a", "toy-twin-b"])
    assert "its layout fits toy-twin-b too, loaded alike" in str(report)
    content = torch.load(path, weights_only=True)
    for key, value in content["online"].items():
        torch.testing.assert_close(model.state_dict()[key], value)


@pytest.mark.parametrize(
    ("rival", "what"),
    [("toy-twin-other-contract", "input contract"), ("toy-twin-target", "weights")],
)
def test_releases_that_load_a_file_differently_are_refused(
    twins: None, tmp_path: Path, rival: str, what: str
) -> None:
    path = _twin_file(tmp_path / "twin.pth")
    with _only("toy-twin-a", "toy-twin-b", rival):
        with pytest.raises(ValueError) as info:
            load_backbone(path)
        text = str(info.value)
        assert text.startswith(f"{path}: its key layout fits 3 releases exactly")
        assert rival in text and "toy-twin-a" in text and f"load it differently ({what})" in text
        assert "pass released=NAME" in text
        model, report = load_backbone(path, released=rival)
    assert report.released == rival and report.input == dict(RELEASED.get(rival).input)
    content = torch.load(path, weights_only=True)
    source = content["target" if rival == "toy-twin-target" else "online"]
    torch.testing.assert_close(model.state_dict()["fc.0.weight"], source["fc.0.weight"])


# -- the real identical layouts, names and shapes only (meta device) -----------------------


def _layout_module(relative: str) -> ModuleType:
    path = TESTS / relative
    spec = importlib.util.spec_from_file_location("layout_" + path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a missing optional dependency skips (importorskip)
    return module


def test_wav2vec2_and_hubert_base_files_load_alike() -> None:
    """torchaudio's wav2vec 2.0 and HuBERT base files: one layout, one architecture, one
    contract, the same tensors: loaded, both named."""
    module = _layout_module("domains/audio/released/test_wav2vec2.py")
    content, suffix = module.LAYOUT_FILES["wav2vec2-base"]("meta")
    found = identify_for_loading(content, source=f"wav2vec2_fairseq_base_ls960{suffix}")
    assert set(found.candidates) == {"wav2vec2-base", "hubert-base"}
    assert found.entry.name == found.candidates[0]


def test_torchgeo_and_softcon_resnet50_files_are_ambiguous() -> None:
    """A plain 13-band timm ResNet-50 state dict fits TorchGeo's MoCo and DINO releases and
    SoftCon's, whose input contracts differ: refused, all three named."""
    module = _layout_module("domains/geospatial/released/test_ssl4eo.py")
    content, suffix = module.LAYOUT_FILES["torchgeo-resnet50-sentinel2-all-moco"]("meta")
    with pytest.raises(ValueError) as info:
        identify_for_loading(content, source=f"rn50{suffix}")
    text = str(info.value)
    for name in module.IDENTICAL_LAYOUTS[0]:
        assert name in text
    assert "input contract" in text and "released=NAME" in text


def test_a_hugging_face_snapshot_of_a_release_repository_loads_offline(tmp_path: Path) -> None:
    """A release's own repository in the Hugging Face cache (its weights file and its own,
    non-domainfm config.json, as symlinks into blobs/): the one weights file is identified."""
    repo = tmp_path / "hub" / "models--nttcslab--byol-a"
    snap = repo / "snapshots" / "c0ffee"
    blobs = repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    weights = byola_file(blobs)
    (blobs / "config-blob").write_text('{"n_mels": 64, "feature_d": 512}')
    (snap / "AudioNTT2020-BYOLA-64x96d512.pth").symlink_to(weights)
    (snap / "config.json").symlink_to(blobs / "config-blob")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c0ffee")
    model, report = load_backbone(repo)
    assert report.released == BYOLA and report.ok
    reference, _ = load_released(BYOLA, weights)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    (snap / "other.safetensors").symlink_to(weights)
    with pytest.raises(ValueError, match=r"2 weights files .*give the file"):
        load_backbone(repo)
