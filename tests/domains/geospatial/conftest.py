"""Geospatial benchmark specs built over the shipped Sentinel-2 patch (5 dates of 13 bands,
101 x 100 px, and its LULC map, values 0 = no data, 1, 2, 3, 4, 8): STAC catalogs written
with pystac under a temporary folder (assets point at the shipped files, read in place)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pystac
import pytest

S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
LULC = "geospatial/eolearn_s2_slovenia_patch/labels/LULC.tif"
GEOTIFF = pystac.MediaType.GEOTIFF
BBOX = [14.0, 46.0, 14.01, 46.01]  # a stand-in footprint: the readers use the rasters' grids
FOOTPRINT = {
    "type": "Polygon",
    "coordinates": [[[14.0, 46.0], [14.01, 46.0], [14.01, 46.01], [14.0, 46.01], [14.0, 46.0]]],
}


@pytest.fixture
def s2_dates(data_root: Path) -> list[Path]:
    return sorted((data_root / S2).glob("S2_L1C_*.tif"))


@pytest.fixture
def lulc(data_root: Path) -> Path:
    return data_root / LULC


def stac_item(
    item_id: str, when: str, assets: dict[str, pystac.Asset], **props: Any
) -> pystac.Item:
    item = pystac.Item(
        id=item_id,
        geometry=FOOTPRINT,
        bbox=BBOX,
        datetime=dt.datetime.fromisoformat(when),
        properties=dict(props),
    )
    for key, asset in assets.items():
        item.add_asset(key, asset)
    return item


@pytest.fixture
def label_catalog(tmp_path: Path, s2_dates: list[Path], lulc: Path) -> Callable[..., Path]:
    """``make(**label_props)``: a catalog of the 5 dates as image items and one label item
    (the STAC label extension's layout: a raster label asset, ``source`` links to the dates),
    written to ``tmp_path/stac/catalog.json``."""

    def make(asset_fields: dict[str, Any] | None = None, **label_props: Any) -> Path:
        catalog = pystac.Catalog(id="slovenia", description="S2 dates and LULC")
        images = []
        for path in s2_dates:
            date = path.stem.removeprefix("S2_L1C_")
            image = pystac.Asset(href=str(path), media_type=GEOTIFF, roles=["data"])
            images.append(stac_item(f"s2-{date}", f"{date}T10:00:00", {"image": image}))
        labels = pystac.Asset(
            href=str(lulc),
            media_type=GEOTIFF,
            roles=["labels"],
            extra_fields=dict(asset_fields or {}),
        )
        props = {
            "label:type": "raster",
            "label:tasks": ["segmentation"],
            "label:description": "land use / land cover",
            "label:properties": None,
            **label_props,
        }
        label = stac_item("lulc", "2015-07-11T10:00:00", {"labels": labels}, **props)
        for image in images:
            catalog.add_item(image)
            label.add_link(pystac.Link(rel="source", target=image, media_type="application/json"))
        catalog.add_item(label)
        root = tmp_path / "stac"
        catalog.normalize_hrefs(str(root))
        catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        return root / "catalog.json"

    return make


@pytest.fixture
def paired_catalog(tmp_path: Path, s2_dates: list[Path], lulc: Path) -> Path:
    """A collection whose items each carry an image and a label asset (one date each), with a
    ``place`` property: the first three dates ``north``, the others ``south``."""
    collection = pystac.Collection(
        id="paired",
        description="one date per item, labels alongside",
        extent=pystac.Extent(
            pystac.SpatialExtent([BBOX]),
            pystac.TemporalExtent([[dt.datetime(2015, 7, 1), dt.datetime(2015, 10, 1)]]),
        ),
    )
    for i, path in enumerate(s2_dates):
        date = path.stem.removeprefix("S2_L1C_")
        assets = {
            "image": pystac.Asset(href=str(path), media_type=GEOTIFF, roles=["data"]),
            "labels": pystac.Asset(href=str(lulc), media_type=GEOTIFF, roles=["labels"]),
        }
        place = "north" if i < 3 else "south"
        collection.add_item(stac_item(f"d{i}", f"{date}T10:00:00", assets, place=place))
    root = tmp_path / "paired"
    collection.normalize_hrefs(str(root))
    collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "collection.json"


COVERS = ("forest", "field", "forest", "water", "field")
"""The per-item classes of :func:`class_catalog`, one per date."""


@pytest.fixture
def class_catalog(tmp_path: Path, s2_dates: list[Path]) -> Path:
    """A catalog of one item per date whose ``cover`` property (its ``label:properties``) is
    its class (:data:`COVERS`), with a ``site`` property ``s0``/``s1`` alternating; the
    image asset is ``visual`` (role ``data``)."""
    catalog = pystac.Catalog(id="chips", description="one class per item")
    for i, (path, cover) in enumerate(zip(s2_dates, COVERS, strict=True)):
        image = pystac.Asset(href=str(path), media_type=GEOTIFF, roles=["data"])
        props = {"label:properties": ["cover"], "cover": cover, "site": f"s{i % 2}"}
        catalog.add_item(stac_item(f"c{i}", "2015-07-11T10:00:00", {"visual": image}, **props))
    catalog.normalize_hrefs(str(tmp_path / "chips"))
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return tmp_path / "chips" / "catalog.json"
