"""The audio benchmark hooks on the shipped spoken digits: frozen features (HEAR scene
embeddings of clips; frame columns with 0/1 event labels, bounded per item), the input
contract (recorded or the domain's defaults), seeded fine-tuning (clip classification, sound
event detection) and continued pretraining (MAE, BYOL-A)."""

from __future__ import annotations

from pathlib import Path
from runpy import run_path

import pytest
import torch

from domainfm.core.registry import init_config
from domainfm.domains.audio import LogMelFrontend, benchmark_hooks, load_audio
from domainfm.domains.audio.benchmark_hooks import AudioBenchmark
from domainfm.domains.audio.benchmark_inputs import task_contract
from domainfm.domains.audio.benchmark_tasks import read_audio_task
from domainfm.domains.audio.contract import AudioContract
from domainfm.domains.audio.hear import (
    HEARModel,
    get_scene_embeddings,
    get_timestamp_embeddings,
)
from domainfm.domains.plugin import get_domain
from domainfm.tasks.benchmark.backbones import BenchmarkBackbone
from domainfm.tasks.benchmark.hooks import UnsupportedProtocol
from domainfm.tasks.benchmark.task import BenchmarkTask

VIT = {
    "in_chans": 1,
    "spatial_dims": 2,
    "patch_size": 16,
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
}

_REQUESTS = run_path(str(Path(__file__).parents[2] / "benchmark_requests.py"))
_embed, _finetune, _adapt = (_REQUESTS[n] for n in ("embed", "finetune", "adapt"))
AUDIO = AudioBenchmark()


def _vit(contract: dict[str, object] | None = None) -> BenchmarkBackbone:
    return BenchmarkBackbone(
        label="tiny", spec="scratch:tiny", architecture="vit_nd", kwargs=VIT, contract=contract
    )


def _task(spec: Path) -> BenchmarkTask:
    task = read_audio_task(spec, {})
    assert task is not None
    return task


def _hear(model: torch.nn.Module, contract: AudioContract) -> HEARModel:
    return HEARModel(model, contract.frontend_module, contract.frames).eval()


def test_scene_features_are_the_hear_scene_embeddings(digits_csv: Path) -> None:
    task = _task(digits_csv)
    backbone = _vit()
    contract = task_contract(backbone, task)  # no recorded contract: the domain's defaults
    assert (contract.frames, contract.frontend["architecture"]) == (96, "log_mel")
    mean, std = contract.frontend["kwargs"]["mean"], contract.frontend["kwargs"]["std"]
    assert -20.0 < mean < 5.0 and 1.0 < std < 20.0  # log-mel statistics of real speech
    model = backbone.build(0)
    items = task.items[:12]
    feats = _embed(AUDIO, model, backbone, task, items, batch_size=5)
    assert len(feats) == 12 and all(f.labels is None for f in feats)
    assert all(f.features.shape == (32,) for f in feats)
    hear = _hear(model, contract)
    for item, got in zip(items[:3], feats, strict=False):
        wave = load_audio(item.inputs[0], 16000, mono=True)[0]
        torch.testing.assert_close(got.features, get_scene_embeddings(wave, hear)[0])
    # the same features one clip at a time, and different clips differ
    again = _embed(AUDIO, model, backbone, task, items[:4], batch_size=1)
    for a, b in zip(again, feats, strict=False):
        torch.testing.assert_close(a.features, b.features, atol=1e-5, rtol=1e-5)
    stacked = torch.stack([f.features for f in feats])
    assert torch.cdist(stacked, stacked).fill_diagonal_(1.0).min() > 1e-4
    # through the plugin
    plugin = _embed(get_domain("audio").benchmark, model, backbone, task, items[:2], batch_size=8)
    torch.testing.assert_close(plugin[1].features, feats[1].features)


def test_a_recorded_contract_prepares_the_input(digits_csv: Path) -> None:
    task = _task(digits_csv)
    recorded = AudioContract.of(LogMelFrontend(mean=-6.0, std=5.0), 64).to_dict()
    backbone = _vit(recorded)
    contract = task_contract(backbone, task)
    assert contract.frames == 64 and contract.frontend == init_config(
        LogMelFrontend(mean=-6.0, std=5.0)
    )
    model = _vit().build(0)
    item = task.items[5]
    (got,) = _embed(AUDIO, model, backbone, task, [item], batch_size=1)
    wave = load_audio(item.inputs[0], 16000, mono=True)[0]
    torch.testing.assert_close(got.features, get_scene_embeddings(wave, _hear(model, contract))[0])
    (default,) = _embed(AUDIO, model, _vit(), task, [item], batch_size=1)
    assert not torch.allclose(got.features, default.features)
    volume = _vit({"kind": "medical3d", "spacing": [1.0, 1.0, 1.0]})
    with pytest.raises(ValueError, match=r"backbone 'tiny'.*no audio front end"):
        _embed(AUDIO, model, volume, task, [item], batch_size=1)


def test_timestamp_features_carry_the_event_labels(
    hear_event_task: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = _task(hear_event_task)
    backbone = _vit()
    model = backbone.build(1)
    feats = _embed(AUDIO, model, backbone, task, task.items, batch_size=2)
    hear = _hear(model, task_contract(backbone, task))
    for item, got in zip(task.items, feats, strict=True):
        wave = load_audio(item.inputs[0], 16000, mono=True)[0]  # 3 s
        columns, stamps_ms = get_timestamp_embeddings(wave, hear)
        assert got.labels is not None
        assert got.features.shape == (columns.shape[1], 32) == (19, 32)  # every 160 ms
        assert got.labels.shape == (19, task.num_classes)
        torch.testing.assert_close(got.features, columns[0])
        assert isinstance(item.target, tuple)
        times = stamps_ms[0] / 1000.0
        for event in item.target:
            inside = (times >= event.onset) & (times <= event.offset)
            assert inside.sum() >= 2  # a spoken digit spans several columns
            assert torch.equal(got.labels[:, event.label], inside.float())
        labeled = {event.label for event in item.target}
        others = [c for c in range(task.num_classes) if c not in labeled]
        assert got.labels[:, others].sum() == 0
    # bounded: a seeded subset of the columns, in time order, the same every time
    monkeypatch.setattr(benchmark_hooks, "MAX_POSITIONS", 5)
    few = _embed(AUDIO, model, backbone, task, task.items[:1], batch_size=1)
    again = _embed(AUDIO, model, backbone, task, task.items[:1], batch_size=1)
    assert few[0].features.shape == (5, 32)
    assert torch.equal(few[0].features, again[0].features)
    rows = [int(torch.cdist(r[None], feats[0].features).argmin()) for r in few[0].features]
    assert rows == sorted(rows) and len(set(rows)) == 5
    assert feats[0].labels is not None and few[0].labels is not None
    assert torch.equal(few[0].labels, feats[0].labels[rows])


def test_finetune_classification_is_seeded(digits_csv: Path) -> None:
    task = _task(digits_csv)
    train = [i for i in task.items if i.group == "george" and i.key[-5] == "0"]
    test = [i for i in task.items if i.group == "nicolas" and i.key[-5] == "0"]
    assert (len(train), len(test)) == (10, 10)
    backbone = _vit()
    plugin = get_domain("audio")
    first = _finetune(plugin.benchmark, backbone, task, train, test, seed=3, steps=3)
    assert set(first) == {"accuracy", "macro_f1", "balanced_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in first.values())
    assert round(first["accuracy"] * 10, 4).is_integer()  # a fraction of 10 test clips
    state = torch.random.get_rng_state()
    again = _finetune(plugin.benchmark, backbone, task, train, test, seed=3, steps=3)
    assert again == first
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG untouched


def test_finetune_refuses_multilabel_tasks(digits_csv: Path, tmp_path: Path) -> None:
    lines = digits_csv.read_text().splitlines()
    tags = tmp_path / "tags.csv"
    rows = [
        f"{(digits_csv.parent / r.split(',')[0]).resolve()},speech;{r.split(',')[1]}"
        for r in lines[1:5]
    ]
    tags.write_text("\n".join(["file,label", *rows]) + "\n")
    task = _task(tags)
    assert task.kind == "multilabel"
    with pytest.raises(UnsupportedProtocol, match="multilabel task"):
        AUDIO.check_plan(task, ["linear", "finetune"], None)
    AUDIO.check_plan(task, ["linear", "knn"], None)
    with pytest.raises(UnsupportedProtocol, match="multilabel task"):
        _finetune(AUDIO, _vit(), task, task.items[:2], task.items[2:], seed=0, steps=2)


def test_finetune_timestamps_scores_frames_and_events(hear_event_task: Path) -> None:
    task = _task(hear_event_task)
    train, test = task.items[:2], task.items[2:]
    backbone = _vit()
    first = _finetune(AUDIO, backbone, task, train, test, seed=0, steps=4)
    assert set(first) == {"map", "macro_f1", "event_f1"}
    assert all(0.0 <= v <= 1.0 for v in first.values())
    assert first["map"] > 0.0  # the test recordings hold 4 labeled events
    again = _finetune(AUDIO, backbone, task, train, test, seed=0, steps=4)
    assert again == first


def _differs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return any(
        not torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_adapt_mae_is_seeded_and_changes_the_weights(digits_csv: Path) -> None:
    task = _task(digits_csv)
    backbone = _vit()
    items = task.items[:10]
    runs = [
        _adapt(
            AUDIO,
            backbone.build(0),
            backbone,
            task,
            items,
            recipe="mae",
            steps=2,
            seed=5,
        )
        for _ in range(2)
    ]
    assert not runs[0].training
    assert _differs(runs[0], backbone.build(0))
    assert not _differs(runs[0], runs[1])
    with pytest.raises(ValueError, match="adapt recipe 'simclr': the audio domain has mae, byol"):
        _adapt(
            AUDIO,
            backbone.build(0),
            backbone,
            task,
            items,
            recipe="simclr",
            steps=1,
            seed=0,
        )


def test_adapt_byol_on_a_cnn(digits_csv: Path) -> None:
    task = _task(digits_csv)
    cnn = BenchmarkBackbone(
        label="ntt",
        spec="scratch:ntt",
        architecture="audio_ntt2020",
        kwargs={"n_mels": 64, "d": 48},
    )
    with pytest.raises(ValueError, match=r"'mae' needs a ViT backbone.*AudioNTT2020"):
        _adapt(
            AUDIO,
            cnn.build(0),
            cnn,
            task,
            task.items[:8],
            recipe="mae",
            steps=1,
            seed=0,
        )
    adapted = _adapt(
        get_domain("audio").benchmark,
        cnn.build(0),
        cnn,
        task,
        task.items[:8],
        recipe="byol",
        steps=1,
        seed=0,
    )
    assert _differs(adapted, cnn.build(0)) and not adapted.training
