"""The medical3d benchmark hooks on the shipped BRATS cases (subsampled to 4 mm): token
features and labels, whole-volume scoring, few-label fine-tuning and continued pretraining."""

from __future__ import annotations

from pathlib import Path
from runpy import run_path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from domainfm.domains.medical3d import benchmark_hooks
from domainfm.domains.medical3d.benchmark_features import (
    MAX_TOKENS,
    PADDING,
    kept_tokens,
    token_labels,
)
from domainfm.domains.medical3d.benchmark_hooks import score_volumes
from domainfm.domains.medical3d.benchmark_inputs import volume_settings
from domainfm.domains.medical3d.benchmark_tasks import read_volume_task
from domainfm.domains.plugin import get_domain
from domainfm.tasks.benchmark.backbones import BenchmarkBackbone
from domainfm.tasks.benchmark.task import BenchmarkTask

Cases = dict[str, dict[str, Path]]
VIT = {"in_chans": 1, "spatial_dims": 3, "patch_size": 4, "embed_dim": 32, "depth": 1}
PLUGIN = get_domain("medical3d")

_REQUESTS = run_path(str(Path(__file__).parents[2] / "benchmark_requests.py"))
_embed, _finetune, _adapt = (_REQUESTS[n] for n in ("embed", "finetune", "adapt"))


def _backbone(contract: dict[str, Any] | None = None, **kwargs: Any) -> BenchmarkBackbone:
    return BenchmarkBackbone(
        label="tiny",
        spec="scratch:tiny",
        architecture="vit_nd",
        kwargs={**VIT, "num_heads": 4, **kwargs},
        contract=contract,
    )


def _task(
    cases: Cases, tmp_path: Path, kinds: tuple[str, ...] = ("flair",), **options: str
) -> BenchmarkTask:
    """A CSV task over the mini BRATS cases: ``kinds`` are the channel files."""
    rows = ["image,label"] + [
        f"{';'.join(str(f[k]) for k in kinds)},{f['seg']}" for f in cases.values()
    ]
    spec = tmp_path / "cases.csv"
    spec.write_text("\n".join(rows) + "\n")
    task = read_volume_task(spec, {"classes": "bg,nec,ed,ne,en", **options})
    assert task is not None
    return task


def test_token_labels_take_each_tokens_majority() -> None:
    label = torch.zeros(2, 2, 5, dtype=torch.long)
    label[..., 4] = 1  # the second token: 1 slice of class 1, 3 of padding
    assert token_labels(label, (2, 2, 4), (1, 1, 2)).tolist() == [0, PADDING]
    label = torch.zeros(4, 2, 2, dtype=torch.long)
    label[:2, :, 0] = 3  # a tie 0 vs 3: the smaller class
    label[2:, :, :] = 2
    label[2:, 0, 0] = 1  # 7 of 2, 1 of 1
    assert token_labels(label, (2, 2, 2), (2, 1, 1)).tolist() == [0, 2]
    label = torch.full((2, 2, 1), 2, dtype=torch.long)  # half class, half padding: the class
    assert token_labels(label, (2, 2, 2), (1, 1, 1)).tolist() == [2]


def test_kept_tokens_are_bounded_seeded_and_skip_unlabeled() -> None:
    labels = torch.zeros(3 * MAX_TOKENS, dtype=torch.long)
    labels[::3] = PADDING
    labels[1::3] = 7  # the ignore index
    kept = kept_tokens(labels, "case_a", ignore_index=7)
    assert kept.tolist() == list(range(2, 3 * MAX_TOKENS, 3))  # fewer than MAX_TOKENS: all
    labels = torch.randint(0, 3, (3 * MAX_TOKENS,), generator=torch.Generator().manual_seed(0))
    a, b = kept_tokens(labels, "case_a", None), kept_tokens(labels, "case_a", None)
    assert len(a) == MAX_TOKENS and torch.equal(a, b) and bool((a.diff() > 0).all())
    assert not torch.equal(a, kept_tokens(labels, "case_b", None))  # drawn per item key


def test_embed_gives_deterministic_token_features_with_labels(
    brats_mini: Cases, tmp_path: Path
) -> None:
    task = _task(brats_mini, tmp_path, spacing="4", roi="32")
    backbone = _backbone()
    model = backbone.build(0)
    first, second = _embed(PLUGIN.benchmark, model, backbone, task, task.items[:2], batch_size=4)
    # 60 x 60 x 39 voxels of 4 mm, tokens of 4^3 voxels: 15 x 15 x 10 (the last slab of
    # tokens is 3 voxels of image + 1 of padding, so every token is labeled)
    assert first.features.shape == (15 * 15 * 10, 32) and first.labels is not None
    assert first.labels.shape == (2250,) and first.labels.dtype == torch.long
    counts = torch.bincount(first.labels, minlength=5)
    assert counts.sum() == 2250 and counts[0] > 2000 and counts[1:].sum() > 0  # some tumour
    assert int(first.labels.max()) <= 4
    assert torch.isfinite(first.features).all()
    assert not torch.equal(first.features, second.features)
    again = _embed(PLUGIN.benchmark, model, backbone, task, task.items[:1], batch_size=2)
    assert torch.equal(again[0].features, first.features)  # eval mode, fixed windows
    assert torch.equal(again[0].labels, first.labels)


def test_embed_refuses_a_backbone_of_other_channels(brats_mini: Cases, tmp_path: Path) -> None:
    task = _task(brats_mini, tmp_path, ("flair", "t1c"), spacing="4", roi="32")
    backbone = _backbone()
    with pytest.raises(
        ValueError, match=r"takes 1 input channels, the task has 2 \(channel0, channel1\)"
    ):
        _embed(
            PLUGIN.benchmark,
            backbone.build(0),
            backbone,
            task,
            task.items[:1],
            batch_size=2,
        )


def test_settings_follow_the_contract(brats_mini: Cases, tmp_path: Path) -> None:
    task = _task(brats_mini, tmp_path, spacing="4", roi="32")
    contract = {"kind": "volume", "modality": "ct", "spacing_mm": [1.5, 1.5, 2.0], "crop_size": 48}
    settings = volume_settings(_backbone(contract), task)
    read = settings.preprocessing
    assert (read.spacing, settings.roi, read.modality) == ((1.5, 1.5, 2.0), (48, 48, 48), "ct")
    assert read.hu_window == (-1000.0, 1000.0) and read.geometry == "strict"
    plain = volume_settings(_backbone(), task)  # no contract: the task's options
    assert (plain.preprocessing.spacing, plain.roi, plain.preprocessing.modality) == (
        (4.0, 4.0, 4.0),
        (32, 32, 32),
        "mri",
    )
    with pytest.raises(ValueError, match="takes 2 input channels, the task has 1"):
        volume_settings(_backbone({**contract, "channels": ["T1", "T2"]}), task)
    with pytest.raises(ValueError, match="expects 'zscore_nonzero' intensity normalization"):
        volume_settings(_backbone({**contract, "normalization": {"type": "zscore_nonzero"}}), task)
    with pytest.raises(ValueError, match="expects raster inputs"):
        volume_settings(_backbone({"kind": "raster", "bands": ["B04"]}), task)


class _Oracle(nn.Module):
    """Logits of the class the input encodes (the label map as a [0, 1] image), or of
    background everywhere."""

    def __init__(self, num_classes: int, *, background: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.background = background

    def forward(self, x: Tensor) -> Tensor:
        index = torch.round(x[:, 0] * (self.num_classes - 1)).long()
        if self.background:
            index = torch.zeros_like(index)
        return torch.nn.functional.one_hot(index, self.num_classes).movedim(-1, 1).float() * 10


def test_whole_volume_scores_of_a_perfect_and_a_background_model(
    brats_mini: Cases, tmp_path: Path
) -> None:
    # the label map itself as a CT image with the window 0..4 HU: the input is label / 4
    task = _task(brats_mini, tmp_path, ("seg",))
    contract = {
        "kind": "volume",
        "modality": "ct",
        "spacing_mm": 4.0,
        "crop_size": 32,
        "hu_window": [0, 4],
    }
    settings = volume_settings(_backbone(contract), task)
    test = task.items[:1]
    perfect = score_volumes(_Oracle(5), task, test, settings, "cpu")
    assert perfect["dice"] == pytest.approx(1.0) and perfect["accuracy"] == pytest.approx(1.0)
    assert perfect["miou"] == pytest.approx(1.0) and perfect["macro_f1"] == pytest.approx(1.0)
    labels = np.concatenate([np.asarray(nib.load(i.target).dataobj).ravel() for i in test])
    present = [f"dice_{n}" for v, n in enumerate(task.classes) if v and (labels == v).any()]
    assert all(perfect[k] == pytest.approx(1.0) for k in present)
    blind = score_volumes(_Oracle(5, background=True), task, test, settings, "cpu")
    assert blind["accuracy"] == pytest.approx(float((labels == 0).mean()), abs=1e-6)
    assert blind["dice"] == 0.0 and all(blind[k] == 0.0 for k in present)
    assert blind["miou"] == pytest.approx(
        float((labels == 0).mean()) / (len(present) + 1), abs=1e-6
    )


def test_finetune_reports_whole_volume_metrics(brats_mini: Cases, tmp_path: Path) -> None:
    task = _task(brats_mini, tmp_path, spacing="8", roi="32")  # 30 x 30 x 20: one window
    metrics = _finetune(
        PLUGIN.benchmark,
        _backbone(),
        task,
        task.items[:2],
        task.items[2:],
        seed=0,
        steps=2,
    )
    dice = {f"dice_{name}" for name in task.classes[1:]}
    assert set(metrics) == {"dice", "accuracy", "macro_f1", "miou"} | dice
    for key in ("accuracy", "macro_f1", "miou"):
        assert 0.0 <= metrics[key] <= 1.0
    per_class = [metrics[key] for key in sorted(dice)]
    assert all(0.0 <= v <= 1.0 for v in per_class if not np.isnan(v))
    assert metrics["dice"] == pytest.approx(float(np.nanmean(per_class)), nan_ok=True)


def test_finetune_is_seeded(
    brats_mini: Cases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trained weights (scored by a stand-in) follow the seed: crops, head init."""

    def checksum(module: nn.Module, *args: Any) -> dict[str, float]:
        return {"weights": float(sum(p.detach().double().sum() for p in module.parameters()))}

    monkeypatch.setattr(benchmark_hooks, "score_volumes", checksum)
    task = _task(brats_mini, tmp_path, spacing="8", roi="16")
    runs = [
        _finetune(
            PLUGIN.benchmark,
            _backbone(),
            task,
            task.items[:2],
            task.items[2:],
            seed=seed,
            steps=2,
        )["weights"]
        for seed in (0, 0, 1)
    ]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_finetune_refuses_an_ignore_label(brats_mini: Cases, tmp_path: Path) -> None:
    task = _task(brats_mini, tmp_path, spacing="8", roi="32")
    ignoring = BenchmarkTask(**{**task.__dict__, "ignore_index": 5})
    with pytest.raises(ValueError, match="does not take tasks with unlabeled positions"):
        _finetune(
            PLUGIN.benchmark,
            _backbone(),
            ignoring,
            task.items[:1],
            task.items[1:2],
            seed=0,
            steps=1,
        )


def _weights(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("recipe", ["mae", "voco"])
def test_adapt_continues_pretraining_on_the_task_volumes(
    recipe: str, brats_mini: Cases, tmp_path: Path
) -> None:
    task = _task(brats_mini, tmp_path, spacing="8", roi="16")
    backbone = _backbone()
    before = _weights(backbone.build(0))
    adapted = [
        _weights(
            _adapt(
                PLUGIN.benchmark,
                backbone.build(0),
                backbone,
                task,
                task.items,
                recipe=recipe,
                steps=2,
                seed=3,
            )
        )
        for _ in range(2)
    ]
    assert set(adapted[0]) == set(before)  # the backbone alone, no objective heads
    assert any(not torch.equal(adapted[0][k], before[k]) for k in before)
    assert all(torch.equal(adapted[0][k], adapted[1][k]) for k in before)  # seeded


def test_adapt_refusals(brats_mini: Cases, tmp_path: Path) -> None:
    task = _task(brats_mini, tmp_path, spacing="8", roi="16")
    backbone = _backbone()
    with pytest.raises(ValueError, match=r"adapt recipe 'simclr' is not one of .*mae, voco"):
        _adapt(
            PLUGIN.benchmark,
            backbone.build(0),
            backbone,
            task,
            task.items,
            recipe="simclr",
            steps=1,
            seed=0,
        )
    two = _task(brats_mini, tmp_path, ("flair", "t1c"), spacing="8", roi="16")
    wide = _backbone(in_chans=2)
    with pytest.raises(ValueError, match="one-channel volumes, the backbone takes 2 channels"):
        _adapt(
            PLUGIN.benchmark,
            wide.build(0),
            wide,
            two,
            two.items,
            recipe="mae",
            steps=1,
            seed=0,
        )
