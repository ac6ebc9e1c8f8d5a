"""Geospatial benchmark hooks on the shipped Sentinel-2 patch (a STAC catalog of its 5 dates
and LULC map, and the scene + label raster spec) with a tiny ViT: patch-token features with
their patches' majority labels, pooled features, the input contract's bands and units,
few-step fine-tuning and continued pretraining."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from runpy import run_path

import numpy as np
import pytest
import rasterio
import torch

from domainfm.domains.geospatial import S2_L1C_DN_INPUT, compute_band_stats
from domainfm.domains.geospatial import benchmark_hooks as hooks
from domainfm.domains.geospatial.benchmark_hooks import GeospatialBenchmark
from domainfm.domains.geospatial.benchmark_tasks import read_geospatial_task
from domainfm.domains.geospatial.benchmark_windows import TaskWindows, task_contract
from domainfm.domains.plugin import get_domain
from domainfm.tasks.benchmark.backbones import BenchmarkBackbone
from domainfm.tasks.benchmark.task import BenchmarkTask

LULC_VALUES = (1, 2, 3, 4, 8)
TINY = {"spatial_dims": 2, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}

_REQUESTS = run_path(str(Path(__file__).parents[2] / "benchmark_requests.py"))
_embed, _finetune, _adapt = (_REQUESTS[n] for n in ("embed", "finetune", "adapt"))
GEO = GeospatialBenchmark()


def _backbone(in_chans: int = 13, contract: dict[str, object] | None = None) -> BenchmarkBackbone:
    return BenchmarkBackbone(
        label="tiny",
        spec="scratch:tiny",
        architecture="vit_nd",
        kwargs={"in_chans": in_chans, **TINY},
        contract=contract,
    )


def _task(spec: Path, **options: str) -> BenchmarkTask:
    task = read_geospatial_task(spec, {"ignore": "0", **options})
    assert task is not None
    return task


@pytest.fixture
def stac_task(label_catalog: Callable[..., Path]) -> BenchmarkTask:
    spec = label_catalog(**{"label:classes": [{"name": None, "classes": list(LULC_VALUES)}]})
    return _task(spec, group="block")


def _expected_patch_labels(lulc: Path, region: tuple[int, ...]) -> list[int]:
    """Majority class index + 1 of each 8 x 8 patch (no data left out; 0 without labels)."""
    row, col, h, w = region
    with rasterio.open(lulc) as src:
        window = src.read(1)[row : row + h, col : col + w].astype(np.int64)
    out = []
    for r in range(0, h, 8):
        for c in range(0, w, 8):
            patch = window[r : r + 8, c : c + 8]
            counts = [int((patch == v).sum()) for v in LULC_VALUES]
            out.append(int(np.argmax(counts)) + 1 if max(counts) else 0)
    return out


def test_segmentation_features_are_patch_tokens_with_majority_labels(
    stac_task: BenchmarkTask, lulc: Path
) -> None:
    items = [i for i in stac_task.items if i.key.startswith("lulc:s2-2015-07-11@")]
    assert len(items) == 16
    model = _backbone().build(0)
    with torch.inference_mode():  # as the runner calls it
        features = _embed(GEO, model, _backbone(), stac_task, items, batch_size=5)
    assert len(features) == 16
    for item, feats in zip(items, features, strict=True):
        assert feats.features.shape == (16, 32) and feats.labels is not None  # 4 x 4 patches
        assert item.region is not None
        assert feats.labels.tolist() == _expected_patch_labels(lulc, item.region)
    labels = torch.cat([f.labels for f in features if f.labels is not None])
    assert set(labels.unique().tolist()) <= set(range(len(stac_task.classes)))
    assert len(labels.unique()) >= 3 and not torch.allclose(
        features[0].features, features[1].features
    )

    again = _embed(GEO, model, _backbone(), stac_task, items, batch_size=16)
    assert model.training  # the caller's mode is restored
    for a, b in zip(features, again, strict=True):
        torch.testing.assert_close(a.features, b.features, rtol=1e-5, atol=1e-5)
        assert a.labels is not None and b.labels is not None and torch.equal(a.labels, b.labels)


def test_tokens_per_item_are_capped_by_a_draw_from_the_key(
    stac_task: BenchmarkTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = list(stac_task.items[:2])
    model = _backbone().build(0)
    full = _embed(GEO, model, _backbone(), stac_task, items, batch_size=2)
    monkeypatch.setattr(hooks, "MAX_TOKENS_PER_ITEM", 5)
    capped = _embed(GEO, model, _backbone(), stac_task, items, batch_size=2)
    again = _embed(GEO, model, _backbone(), stac_task, items, batch_size=1)
    for whole, part, repeat in zip(full, capped, again, strict=True):
        assert part.features.shape == (5, 32) and part.labels is not None
        assert torch.equal(part.features, repeat.features)
        rows = [int((whole.features - row).abs().sum(1).argmin()) for row in part.features]
        assert rows == sorted(set(rows))  # 5 distinct tokens, in order
        assert whole.labels is not None and part.labels.tolist() == whole.labels[rows].tolist()


def test_scene_classification_features_are_pooled_and_deterministic(
    s2_dates: list[Path], lulc: Path
) -> None:
    task = _task(s2_dates[0], labels=str(lulc), target="scene")
    items = task.items[:6]
    model = _backbone().build(1)
    plugin = get_domain("geospatial")
    features = _embed(plugin.benchmark, model, _backbone(), task, items, batch_size=4)
    again = _embed(GEO, model, _backbone(), task, items, batch_size=4)
    assert [f.features.shape for f in features] == [(32,)] * 6
    assert all(f.labels is None for f in features)
    assert all(torch.equal(a.features, b.features) for a, b in zip(features, again, strict=True))


def test_inputs_follow_the_contract_or_the_tasks_band_statistics(
    s2_dates: list[Path], lulc: Path
) -> None:
    task = _task(s2_dates[0], labels=str(lulc))
    default = task_contract(_backbone(), task, task.items)  # no contract: the scene's statistics
    stats = compute_band_stats(s2_dates[:1])
    expected = stats.contract().moments()
    for got, want in zip(default.moments(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)

    dn = S2_L1C_DN_INPUT.select(["B04", "B03", "B02", "B08"]).to_dict()
    released = _backbone(in_chans=4, contract=dn)
    with pytest.raises(
        ValueError, match=r"S2_L1C_2015-07-11\.tif.*wrong units.*multiply it by 10000"
    ):
        task_contract(released, task, task.items)
    scaled = _task(s2_dates[0], labels=str(lulc), input_scale="10000")
    contract = task_contract(released, scaled, scaled.items)
    item = scaled.items[0]
    x = TaskWindows(task=scaled, items=[item], contract=contract)[0]["input"]
    assert item.region is not None
    row, col, h, w = item.region
    with rasterio.open(s2_dates[0]) as src:  # bands by name; DN / 10000 is the reflectance
        names = list(src.descriptions)
        raw = src.read([names.index(b) + 1 for b in ("B04", "B03", "B02", "B08")])
    torch.testing.assert_close(x, torch.from_numpy(raw[:, row : row + h, col : col + w]))
    features = _embed(GEO, released.build(0), released, scaled, scaled.items[:2], batch_size=2)
    assert features[0].features.shape == (16, 32)


def test_patch_labels_take_the_majority_of_labeled_pixels() -> None:
    label = torch.tensor([[1, 1, 2, 0], [0, 2, 2, 0], [3, 3, 0, 0], [4, 4, 0, 0]])
    # cells of 2 x 2: (1 1 / 0 2) -> 1; (2 0 / 2 0) -> 2; (3 3 / 4 4) tie -> 3; (0 0 / 0 0) -> 0
    assert hooks.patch_labels(label, (2, 2), num_classes=5).tolist() == [1, 2, 3, 0]


def test_finetune_scores_held_out_blocks(
    stac_task: BenchmarkTask, s2_dates: list[Path], lulc: Path
) -> None:
    train = [i for i in stac_task.items if i.group == "lulc:block:0,0"][:4]
    test = [i for i in stac_task.items if i.group == "lulc:block:64,64"][:2]
    seg = _finetune(GEO, _backbone(), stac_task, train, test, seed=0, steps=1)
    assert set(seg) == {"accuracy", "macro_f1", "miou", "dice"}
    assert all(0.0 <= v <= 1.0 for v in seg.values()) and seg["miou"] <= seg["accuracy"]

    scene = _task(s2_dates[0], labels=str(lulc), target="scene", window="16")
    train = [i for i in scene.items if i.group != "block:64,64"][:8]
    test = [i for i in scene.items if i.group == "block:64,64"]
    runs = [
        _finetune(
            get_domain("geospatial").benchmark,
            _backbone(),
            scene,
            train,
            test,
            seed=3,
            steps=1,
        )
        for _ in range(2)
    ]
    assert set(runs[0]) == {"accuracy", "macro_f1", "balanced_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in runs[0].values())
    assert runs[0] == runs[1]  # the same seed gives the same numbers


def test_adapt_continues_pretraining_on_the_windows(stac_task: BenchmarkTask) -> None:
    items = stac_task.items[:4]
    plugin = get_domain("geospatial")

    def adapt(recipe: str, start: torch.nn.Module | None = None) -> torch.nn.Module:
        model = start if start is not None else _backbone().build(0)
        return _adapt(
            plugin.benchmark,
            model,
            _backbone(),
            stac_task,
            items,
            recipe=recipe,
            steps=1,
            seed=0,
        )

    start = _backbone().build(0)
    before = {k: v.clone() for k, v in start.state_dict().items()}
    adapted = adapt("mae", start)
    assert adapted is start
    changed = [k for k, v in adapted.state_dict().items() if not torch.equal(v, before[k])]
    assert "patch_embed.proj.weight" in changed or len(changed) > len(before) // 2
    again = adapt("mae")  # the same seed, the same weights
    for key, value in adapted.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    fg = adapt("fgmae")
    assert any(not torch.equal(v, before[k]) for k, v in fg.state_dict().items())
    assert any(not torch.equal(v, again.state_dict()[k]) for k, v in fg.state_dict().items())
    with pytest.raises(ValueError, match="adapt recipe 'dino': geospatial knows mae, fgmae"):
        adapt("dino")
