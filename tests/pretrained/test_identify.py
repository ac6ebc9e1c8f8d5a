"""``identify_release`` names every registered release from its file content alone.

The file contents come from the release tests themselves: every module matching
``tests/**/released/test_*.py`` (and tests/pretrained/test_registry.py) defines
``LAYOUT_FILES = {release name: build(device) -> (content, suffix)}``, the release's file in
its exact nesting at full size; built on the meta device, nothing is allocated. A module may
also declare ``IDENTICAL_LAYOUTS``: groups of releases whose files cannot be told apart: the
same key names and shapes (one architecture trained with MoCo and with DINO, published as
plain state dicts), or one file that several releases read (one per encoder of a
multi-encoder checkpoint). For those, identification must report the whole group as
ambiguous, never pick one. Groups declared in different modules that share a release are
merged.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from domainfm.core.plugins import discover_plugins
from domainfm.pretrained.identify import (
    best_matches,
    describe_identification,
    identify_release,
    match_release,
    near_misses,
)
from domainfm.pretrained.registry import RELEASED, split_dropped

TESTS = Path(__file__).resolve().parents[1]
LAYOUT_MODULES = sorted(
    [*TESTS.glob("**/released/test_*.py"), TESTS / "pretrained" / "test_registry.py"]
)

Builder = Callable[[str], tuple[Any, str]]


def _load(path: Path) -> ModuleType | str:
    """The test module at ``path`` (its own name, so pytest's copy is not disturbed), or why
    it was skipped (a missing optional dependency)."""
    name = "layout_files_" + "_".join(path.relative_to(TESTS).with_suffix("").parts)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except pytest.skip.Exception as skipped:
        return f"{path.relative_to(TESTS)}: {skipped}"
    return module


@cache
def _collected() -> tuple[dict[str, Builder], list[frozenset[str]], list[str]]:
    """``(builders by release, identical-layout groups, skipped modules)``."""
    builders: dict[str, Builder] = {}
    groups: list[frozenset[str]] = []
    skipped: list[str] = []
    for path in LAYOUT_MODULES:
        module = _load(path)
        if isinstance(module, str):
            skipped.append(module)
            continue
        files = getattr(module, "LAYOUT_FILES", {})
        clash = set(files) & set(builders)
        assert not clash, f"{path}: LAYOUT_FILES of {sorted(clash)} defined twice"
        builders.update(files)
        groups += [frozenset(g) for g in getattr(module, "IDENTICAL_LAYOUTS", ())]
    return builders, _merged(groups), skipped


def _merged(groups: list[frozenset[str]]) -> list[frozenset[str]]:
    """Groups sharing a release joined into one."""
    merged: list[frozenset[str]] = []
    for group in groups:
        joined = [g for g in merged if g & group]
        merged = [g for g in merged if not g & group]
        merged.append(frozenset(group.union(*joined)))
    return merged


def _releases() -> list[str]:
    discover_plugins()
    return sorted(RELEASED)


def test_every_release_has_a_layout_file() -> None:
    builders, groups, skipped = _collected()
    missing = sorted(set(_releases()) - set(builders))
    if missing and skipped:
        pytest.skip(f"modules skipped ({'; '.join(skipped)}); no LAYOUT_FILES for {missing}")
    assert not missing, f"registered releases without LAYOUT_FILES in a released test: {missing}"
    unknown = sorted(set(builders) - set(_releases()))
    assert not unknown, f"LAYOUT_FILES of releases that are not registered: {unknown}"
    for group in groups:
        assert len(group) > 1 and group <= set(builders), group


@pytest.mark.parametrize("name", _releases())
def test_identify_names_the_release(name: str) -> None:
    builders, groups, _ = _collected()
    if name not in builders:
        pytest.skip(f"no LAYOUT_FILES builder for {name} (see the test above)")
    content, suffix = builders[name]("meta")
    matches = identify_release(content, source=f"{name}{suffix}")
    best = {m.name for m in best_matches(matches)}
    exact = {m.name: m.differences() for m in matches if m.exact}
    own = next(m for m in matches if m.name == name)
    assert name in best, (
        f"{name}: its own file is not its best exact match; best {sorted(best)}, "
        f"exact {exact}; its own: {own.differences()}"
    )
    if len(best) > 1:  # identical layouts: reported together, and declared as such
        declared = [g for g in groups if name in g]
        assert declared and best == set(declared[0]), (
            f"{name}: the file fits {sorted(best)} exactly; declare them in IDENTICAL_LAYOUTS "
            "if their layouts are truly identical, or tell them apart"
        )
        assert "ambiguous" in describe_identification(matches, source=name)


def test_near_miss_says_what_differs() -> None:
    """A timm ViT-S/16 file with one renamed key and one band more: no exact release; the
    closest layouts come with the keys that differ."""
    builders, _, _ = _collected()
    state, _ = builders["timm-vit-small-patch16-224"]("meta")
    state = dict(state)
    state["blocks.3.attn.qkv_v2.weight"] = state.pop("blocks.3.attn.qkv.weight")
    state["patch_embed.proj.weight"] = torch.empty(384, 4, 16, 16, device="meta")
    matches = identify_release(state, source="vit.pth")
    assert not best_matches(matches)
    closest = near_misses(matches)[0]
    assert closest.name == "timm-vit-small-patch16-224"
    text = closest.differences()
    assert "148 of 150 tensors fit" in text and "blocks.3.attn.qkv.weight" in text
    assert "blocks.3.attn.qkv_v2.weight" in text and "(384, 3, 16, 16) vs file (384, 4" in text
    described = describe_identification(matches, source="vit.pth")
    assert described.startswith("vit.pth: no registered release fits exactly; closest layouts:")


def test_unrelated_content_matches_nothing() -> None:
    matches = identify_release({"weight": torch.zeros(3)}, source="x.pth")
    assert not best_matches(matches) and not near_misses(matches)
    assert all(m.score == 0 for m in matches)
    refused = [m for m in matches if m.report is None]
    assert refused and all(m.error for m in refused)  # each key map's refusal kept as text


def _tensor_dicts(content: Any) -> list[dict[str, Any]]:
    """The dicts of ``content`` (nested) that hold tensors, outermost first."""
    found: list[dict[str, Any]] = []
    if isinstance(content, dict):
        if any(isinstance(v, torch.Tensor) for v in content.values()):
            found.append(content)
        for value in content.values():
            found += _tensor_dicts(value)
    return found


@pytest.mark.parametrize("name", _releases())
def test_a_renamed_key_is_named_never_loaded_silently(name: str) -> None:
    """Every release: its own file with one weight it loads renamed fits no longer, and what
    differs names that weight: missing, and the renamed key unexpected (a key map passes
    unknown keys on), or the key map refuses the file."""
    builders, _, _ = _collected()
    if name not in builders:
        pytest.skip(f"no LAYOUT_FILES builder for {name}")
    entry = RELEASED.get(name)
    content, suffix = builders[name]("meta")
    mapped, _ = split_dropped(entry.map_keys(content), entry.drop)
    used = {id(v) for v in mapped.values()}
    target = next(
        (d, k) for d in _tensor_dicts(content) for k, v in d.items() if id(v) in used and v.ndim > 1
    )
    holder, key = target
    holder[f"{key}_renamed"] = holder.pop(key)
    match = match_release(entry, content, source=f"{name}{suffix}")
    assert not match.exact, f"{name}: a file without {key} still fits exactly"
    if match.report is None:  # the key map refuses the file (loading raises, naming it)
        assert match.error, name
        return
    renamed = [k for k in match.report.unexpected if k.endswith("_renamed")]
    assert renamed and match.report.missing, match.differences(listed=1000)
