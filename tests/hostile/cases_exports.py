"""Hostile export folders and backbone configs through ``domainfm inspect`` (API:
``load_backbone``): missing or corrupt weights and configs, unknown or absurd architectures,
deeply nested JSON, and the global ``--max-alloc-gb`` flag."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from cases_checkpoints import export_copy, inspect_run
from hostile_files import ct_volume, garbage, nifti_bytes, truncate, write_nifti
from hostile_spec import Case, Ctx, Run
from safetensors.torch import load_file, save_file

from domainfm.pretrained.load import load_backbone

G = "checkpoints"
PENDING_INSPECT = "inspect catches every failure"
PENDING_GUARD = "size guards before allocation (model build)"


def _config(**changes: Any) -> Callable[[Path], None]:
    """Edit the export's ``config.json``: top-level keys, or ``kwargs.NAME`` entries."""

    def edit(folder: Path) -> None:
        path = folder / "config.json"
        config = json.loads(path.read_text())
        for key, value in changes.items():
            if key.startswith("kw_"):
                config["kwargs"][key[3:]] = value
            else:
                config[key] = value
        path.write_text(json.dumps(config))

    return edit


def _write(name: str, content: bytes | str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        target = folder / name
        target.write_bytes(content.encode() if isinstance(content, str) else content)

    return edit


def _tensors(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        tensors = load_file(folder / "model.safetensors")
        edit(tensors)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "domainfm.backbone"})

    return apply


def _alloc(value: str) -> Callable[[Ctx], Run]:
    def build(ctx: Ctx) -> Run:
        return Run(["--max-alloc-gb", value, "inspect", str(ctx.models.export)], names=(value,))

    return build


def _tiny_limit(limit: str, shape: tuple[int, int, int]) -> Callable[[Ctx], Run]:
    """``--max-alloc-gb LIMIT segment`` of a ``shape`` CT volume."""

    def build(ctx: Ctx) -> Run:
        volume = write_nifti(ctx.path("big_ct.nii.gz"), nifti_bytes(ct_volume(shape)))
        out = ctx.root / "seg.nii.gz"
        argv = ["--max-alloc-gb", limit, "segment", str(ctx.models.medical_seg), str(volume)]
        return Run([*argv, str(out), "--no-progress"], outputs=(out,))

    return build


def _export_cases() -> list[Case]:
    def drop_first(t: dict[str, torch.Tensor]) -> None:
        t.pop(sorted(t)[0])

    deep = "[" * 100000 + "]" * 100000
    return [
        Case("export_inspect_clean", G, inspect_run(lambda ctx: ctx.models.export), code=0),
        Case(
            "export_missing_weights",
            G,
            inspect_run(export_copy(lambda f: (f / "model.safetensors").unlink())),
        ),
        Case(
            "export_missing_config",
            G,
            inspect_run(export_copy(lambda f: (f / "config.json").unlink())),
        ),
        Case(
            "export_missing_tensor",
            G,
            lambda ctx: Run(
                ["inspect", str(p := export_copy(_tensors(drop_first))(ctx))],
                names=("missing",),
                api=lambda: load_backbone(p),
            ),
            code=1,
        ),
        Case(
            "export_extra_tensor",
            G,
            lambda ctx: Run(
                ["inspect", str(export_copy(_tensors(lambda t: t.update(x=torch.zeros(1))))(ctx))],
                names=("unexpected",),
            ),
            code=1,
        ),
        Case(
            "export_weights_truncated",
            G,
            inspect_run(export_copy(lambda f: truncate(f / "model.safetensors", 0.5))),
        ),
        Case(
            "export_weights_garbage",
            G,
            inspect_run(export_copy(lambda f: garbage(f / "model.safetensors"))),
        ),
        Case(
            "export_weights_header_huge",
            G,
            inspect_run(
                export_copy(_write("model.safetensors", (2**62).to_bytes(8, "little") + b"{}"))
            ),
        ),
        Case("config_not_json", G, inspect_run(export_copy(_write("config.json", "{not json")))),
        Case("config_a_list", G, inspect_run(export_copy(_write("config.json", "[1, 2]")))),
        Case("config_wrong_format", G, inspect_run(export_copy(_config(format="other.thing")))),
        Case(
            "config_unknown_architecture",
            G,
            inspect_run(export_copy(_config(architecture="nope_net"))),
            pending=PENDING_INSPECT,
        ),
        Case(
            "config_architecture_not_a_string",
            G,
            inspect_run(export_copy(_config(architecture=123))),
            pending=PENDING_INSPECT,
        ),
        Case("config_kwargs_a_list", G, inspect_run(export_copy(_config(kwargs=[1, 2])))),
        Case("config_unknown_kwarg", G, inspect_run(export_copy(_config(kw_bogus=1)))),
        Case(
            "config_absurd_width",
            G,
            inspect_run(export_copy(_config(kw_embed_dim=2**20, kw_num_heads=1))),
            pending=PENDING_GUARD,
        ),
        Case("config_negative_depth", G, inspect_run(export_copy(_config(kw_depth=-1)))),
        Case("config_zero_heads", G, inspect_run(export_copy(_config(kw_num_heads=0)))),
        Case("config_width_a_string", G, inspect_run(export_copy(_config(kw_embed_dim="wide")))),
        Case("config_zero_patch", G, inspect_run(export_copy(_config(kw_patch_size=0)))),
        Case(
            "config_nan_mlp_ratio", G, inspect_run(export_copy(_config(kw_mlp_ratio=float("nan"))))
        ),
        Case("config_deeply_nested_json", G, inspect_run(export_copy(_write("config.json", deep)))),
        Case(
            "config_absurd_depth",
            G,
            inspect_run(export_copy(_config(kw_depth=10**7))),
            slow=True,
            timeout=60,
            pending=PENDING_GUARD,
        ),
        Case("inspect_empty_folder", G, inspect_run(lambda ctx: ctx.path("nothing", "x").parent)),
        Case("inspect_missing_path", G, inspect_run(lambda ctx: ctx.root / "absent_export")),
    ]


def _alloc_cases() -> list[Case]:
    return [
        Case("alloc_flag_not_a_number", G, _alloc("lots"), pattern="max-alloc|MAX_ALLOC"),
        Case("alloc_flag_negative", G, _alloc("-1"), pattern="max-alloc|MAX_ALLOC"),
        Case("alloc_flag_infinite", G, _alloc("inf"), pattern="max-alloc|MAX_ALLOC"),
        Case(
            "alloc_flag_tiny_refuses_model",
            G,
            _tiny_limit("0.00001", (20, 20, 20)),
            pattern=r"medical_seg\.ckpt.*(KiB|MiB).*max-alloc-gb",
        ),
        Case(
            "alloc_flag_small_refuses_volume",
            G,
            _tiny_limit("0.002", (96, 96, 96)),
            pattern=r"big_ct\.nii\.gz.*(KiB|MiB).*max-alloc-gb",
            pending="size guards before allocation (resample / sliding window)",
        ),
    ]


CASES: list[Case] = [*_export_cases(), *_alloc_cases()]
