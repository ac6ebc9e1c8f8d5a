"""Geo-cluster pseudo-labels: k-means on the sphere groups nearby places, is seeded, and
labels real windows by their place; the core's linear classifier trains on them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.objectives.rotation import RotationPrediction
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.geospatial import LANDSAT_RGB, RasterWindowDataset
from domainfm.domains.geospatial.geo_clusters import geo_cluster_labels

LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"


def _box(lon: float, lat: float) -> tuple[float, float, float, float]:
    return (lon - 0.1, lat - 0.1, lon + 0.1, lat + 0.1)


def test_clusters_follow_geography_across_the_antimeridian() -> None:
    places = [
        _box(179.9, 10),
        _box(-179.9, 10.2),
        _box(14.5, 45.8),
        _box(15.0, 46.0),
        _box(-77.0, 38.9),
    ]
    labels = geo_cluster_labels(places, num_clusters=3)
    assert labels[0] == labels[1]  # 0.2 degrees apart across the antimeridian
    assert labels[2] == labels[3] and len(set(labels)) == 3
    assert labels == [0, 0, 1, 1, 2]  # ids in order of first appearance
    assert geo_cluster_labels(places, num_clusters=3, seed=5) == labels  # well separated
    with pytest.raises(ValueError, match="num_clusters=6"):
        geo_cluster_labels(places, num_clusters=6)


def test_real_windows_carry_their_place_label_and_train_a_classifier(
    data_root: Path,
) -> None:
    s2 = sorted((data_root / "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band").glob("*.tif"))
    ds = RasterWindowDataset(files=[*s2[:2]], size=16, geo_clusters=1)
    assert {int(ds[(i, i)]["geo_label"]) for i in range(4)} == {0}
    landsat = RasterWindowDataset(
        files=[data_root / LANDSAT], size=16, band_names=LANDSAT_RGB, geo_clusters=1
    )
    assert int(landsat[(0, 1)]["geo_label"]) == 0
    with pytest.raises(ValueError, match="num_clusters=2"):
        RasterWindowDataset(files=[*s2[:2]], size=16, geo_clusters=2)  # one place only
    # the pretext head: the core's linear classifier on pooled embeddings
    vit = VisionTransformerND(
        in_chans=13, spatial_dims=2, patch_size=8, embed_dim=32, depth=1, num_heads=4
    )
    head = RotationPrediction(embed_dim=32, num_classes=2, views=["input"], labels=["geo_label"])
    batch = {
        "input": torch.stack([ds[(i, i)]["input"] for i in range(4)]),
        "geo_label": torch.tensor([0, 1, 0, 1]),
    }
    out = head.forward_batch(BatchFeatures(vit, batch))
    out.loss.backward()
    assert torch.isfinite(out.loss) and vit.patch_embed.proj.weight.grad is not None
