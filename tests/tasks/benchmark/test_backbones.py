from __future__ import annotations

from pathlib import Path

import pytest
import torch

from domainfm.pretrained.export import export_backbone
from domainfm.tasks.benchmark.backbones import BenchmarkBackbone, parse_backbone

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_scratch_of_a_release_has_its_architecture_and_contract_and_a_seeded_init():
    b = parse_backbone("scratch:ssl4eo-s12-vit-small-patch16-mae")
    assert not b.pretrained and b.label == "scratch:ssl4eo-s12-vit-small-patch16-mae"
    assert b.contract is not None and b.contract["kind"] == "raster"
    small = BenchmarkBackbone(
        label=b.label, spec=b.spec, architecture=b.architecture, kwargs={**b.kwargs, "depth": 1}
    )
    assert _same(small.build(3), small.build(3))
    assert not _same(small.build(3), small.build(4))


def test_scratch_of_a_training_config_reads_its_backbone():
    b = parse_backbone(f"scratch:{CONFIGS / 'geospatial' / 'mae_s2.yaml'}")
    assert b.architecture == "vit_nd" and b.kwargs["in_chans"] == 13 and b.contract is None


def test_an_export_folder_loads_its_weights_and_contract(tiny_scratch, tmp_path):
    model = tiny_scratch.build(0)
    meta = {**tiny_scratch.meta(), "input": {"kind": "raster", "bands": ["B1"]}}
    folder = export_backbone(model, tmp_path / "mine", meta=meta)
    b = parse_backbone(str(folder))
    assert b.pretrained and b.label == "mine" and b.contract["bands"] == ["B1"]
    assert _same(b.build(7), model)
    named = parse_backbone(f"ours@{folder}")
    assert named.label == "ours" and named.source == folder
    assert parse_backbone(f"scratch:{folder}").contract["bands"] == ["B1"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("release:no-such-release=x.pth", "no registered release"),
        ("release:ssl4eo-s12-vit-small-patch16-mae", "expected release:NAME=PATH"),
        ("scratch:no-such-thing", "does not exist"),
        ("/no/such/export", "does not exist"),
    ],
)
def test_bad_specs_are_refused_by_name(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_backbone(spec)
