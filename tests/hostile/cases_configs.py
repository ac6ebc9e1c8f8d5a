"""Hostile ``domainfm fit`` configs: YAML tags that would run code, absurd and mistyped values,
unknown keys and classes, unreadable config files and data files.

Every config is the one-step medical MAE config of :mod:`hostile_models` with one thing
broken, so a failure names that one thing (``fit_tiny_config_trains`` proves the config
itself trains)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hostile_files import (
    garbage,
    truncate,
)
from hostile_spec import Case, Ctx, Run

G = "configs"
FIT_RECORDS = ("config.yaml", "checkpoints/*", "lightning_logs/*")
"""What a ``fit`` that failed after its start may leave: Lightning's record of the config and
checkpoint folder (whole files, not partial outputs)."""
PENDING_CLI = "LightningCLI errors wrapped (--ckpt_path through the safe loader first)"
PENDING_UNION = "pretrained=/frontend_from= refusals not ending in 'Union subtypes'"
PENDING_AUDIO = "file-based audio training validates, skips and counts bad files"
PENDING_GUARD = "size guards before allocation"


def _fit(
    text: str = "",
    *,
    replace: tuple[str, str] | None = None,
    extra: tuple[str, ...] = (),
    name: str | None = None,
    **run: Any,
) -> Callable[[Ctx], Run]:
    """``fit --config fit.yaml`` with ``text`` appended or one ``replace`` made (``{marker}``
    stands for the marker file, ``{root}`` for the case folder)."""

    def build(ctx: Ctx) -> Run:
        config = ctx.models.fit_config(ctx.root)
        if replace is not None:
            old, new = replace
            body = config.read_text()
            assert old in body, old
            config.write_text(body.replace(old, new.format(marker=ctx.marker, root=ctx.root)))
        if text:
            with open(config, "a") as handle:
                handle.write(text.format(marker=ctx.marker, root=ctx.root))
        argv = [
            "fit",
            "--config",
            str(config),
            *(a.format(marker=ctx.marker, root=ctx.root) for a in extra),
        ]
        return Run(argv, names=(name,) if name else (), allowed_new=FIT_RECORDS, **run)

    return build


def _config_file(make: Callable[[Ctx], Path], **run: Any) -> Callable[[Ctx], Run]:
    """``fit --config PATH`` where ``make`` writes the whole (hostile) config file."""

    def build(ctx: Ctx) -> Run:
        path = make(ctx)
        return Run(
            ["fit", "--config", str(path)], names=(path.name,), allowed_new=FIT_RECORDS, **run
        )

    return build


def _text(name: str, content: str | bytes) -> Callable[[Ctx], Path]:
    def make(ctx: Ctx) -> Path:
        path = ctx.path(name)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    return make


APPLY = '!!python/object/apply:os.system ["touch {marker}"]'
SEED = "seed_everything: 0"
BOMB = "".join(
    [
        "a: &a [x, x, x, x, x, x, x, x, x]\n",
        *(
            f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


def _yaml_tag_cases() -> list[Case]:
    return [
        Case("yaml_apply_os_system", G, _fit(replace=(SEED, f"seed_everything: {APPLY}"))),
        Case(
            "yaml_apply_open",
            G,
            _fit(
                replace=(
                    SEED,
                    'seed_everything: !!python/object/apply:builtins.open ["{marker}", "w"]',
                )
            ),
        ),
        Case(
            "yaml_python_name", G, _fit(replace=(SEED, "seed_everything: !!python/name:os.system"))
        ),
        Case(
            "yaml_object_new",
            G,
            _fit(
                replace=(SEED, 'seed_everything: !!python/object/new:os.system ["touch {marker}"]')
            ),
        ),
        Case(
            "yaml_tag_in_init_args",
            G,
            _fit(replace=("lr: 1.0e-3", f"lr: {APPLY}")),
        ),
        Case(
            "yaml_tag_in_second_config",
            G,
            lambda ctx: _second_config(ctx, f"seed_everything: {APPLY}\n"),
        ),
        Case("yaml_tag_on_command_line", G, _fit(extra=(f"--seed_everything={APPLY}",))),
        Case(
            "yaml_class_path_os_system",
            G,
            _fit(
                replace=(
                    "class_path: domainfm.tasks.pretrain_module.PretrainModule",
                    "class_path: os.system\n  command: touch {marker}",
                )
            ),
        ),
        Case(
            "yaml_class_path_popen",
            G,
            _fit(
                replace=(
                    "class_path: domainfm.domains.medical3d.VolumePretrainDataModule",
                    "class_path: subprocess.Popen\n  args: [touch, {marker}]",
                )
            ),
        ),
        Case("yaml_alias_bomb", G, _fit(BOMB), slow=True, timeout=90),
    ]


def _second_config(ctx: Ctx, text: str) -> Run:
    config = ctx.models.fit_config(ctx.root)
    second = ctx.path("override.yaml")
    second.write_text(text.format(marker=ctx.marker))
    argv = ["fit", "--config", str(config), "--config", str(second)]
    return Run(argv, names=("override.yaml",), allowed_new=FIT_RECORDS)


def _value_cases() -> list[Case]:
    return [
        Case("fit_tiny_config_trains", G, _fit(), code=0),
        Case("yaml_unknown_top_key", G, _fit("bogus_key: 1\n"), pattern="bogus_key"),
        Case(
            "yaml_unknown_trainer_key",
            G,
            _fit(extra=("--trainer.bogus_flag=1",)),
            pattern="bogus_flag",
        ),
        Case(
            "yaml_unknown_init_arg",
            G,
            _fit(replace=("lr: 1.0e-3", "lr: 1.0e-3\n    bogus_arg: 3")),
            pattern="bogus_arg",
        ),
        Case(
            "yaml_unknown_class",
            G,
            _fit(replace=("domainfm.core.vit.VisionTransformerND", "domainfm.core.vit.NopeNet")),
            pattern="NopeNet",
        ),
        Case(
            "yaml_max_steps_a_word",
            G,
            _fit(extra=("--trainer.max_steps=many",)),
            pattern="max_steps",
        ),
        Case("yaml_lr_a_list", G, _fit(replace=("lr: 1.0e-3", "lr: [1, 2]")), pattern="lr"),
        Case(
            "yaml_negative_crop",
            G,
            _fit(replace=("crop_size: 16", "crop_size: -8")),
            pattern="crop_size",
        ),
        Case(
            "yaml_zero_crop",
            G,
            _fit(replace=("crop_size: 16", "crop_size: 0")),
            pattern="crop_size",
        ),
        Case(
            "yaml_zero_batch",
            G,
            _fit(replace=("batch_size: 2", "batch_size: 0")),
            pattern="batch_size",
        ),
        Case(
            "yaml_negative_workers",
            G,
            _fit(replace=("num_workers: 0", "num_workers: -1")),
            pattern="num_workers",
        ),
        Case(
            "yaml_negative_spacing",
            G,
            _fit(replace=("spacing: 2.0", "spacing: -2.0")),
            pattern="spacing",
        ),
        Case(
            "yaml_zero_heads",
            G,
            _fit(replace=("num_heads: 2}", "num_heads: 0}}")),
            pattern="num_heads",
            pending=PENDING_CLI,
        ),
        Case(
            "yaml_mask_ratio_above_one",
            G,
            _fit(replace=("ratio: 0.5,", "ratio: 1.5,")),
            pattern="ratio",
        ),
        Case(
            "yaml_huge_width",
            G,
            _fit(replace=("embed_dim: 16", "embed_dim: 65536")),
            pattern=r"embed_dim|GiB|TiB",
            pending=PENDING_GUARD,
        ),
        Case(
            "yaml_huge_crop",
            G,
            _fit(replace=("crop_size: 16", "crop_size: 100000")),
            pattern=r"crop|GiB|TiB",
            pending=PENDING_GUARD,
        ),
        Case(
            "yaml_data_file_missing",
            G,
            _fit(replace=("files: [", "files: [{root}/absent.nii.gz, "), name="absent.nii.gz"),
        ),
        Case("yaml_data_file_truncated_only", G, _truncated_volume_fit),
    ]


def _truncated_volume_fit(ctx: Ctx) -> Run:
    """The config's only volume cut short."""
    cut = ctx.path("cut.nii.gz")
    cut.write_bytes(ctx.models.volume.read_bytes())
    truncate(cut, 0.4)
    config = ctx.models.fit_config(ctx.root, volume=cut)
    return Run(["fit", "--config", str(config)], names=(cut.name,), allowed_new=FIT_RECORDS)


def _file_cases() -> list[Case]:
    return [
        Case(
            "config_file_not_yaml",
            G,
            _config_file(lambda ctx: garbage(ctx.path("noise.yaml"))),
            pending=PENDING_CLI,
        ),
        Case("config_file_empty", G, _config_file(_text("empty.yaml", ""))),
        Case("config_file_missing", G, _config_file(lambda ctx: ctx.root / "absent.yaml")),
        Case(
            "config_file_is_folder",
            G,
            _config_file(lambda ctx: ctx.path("folder.yaml", "x").parent),
        ),
        Case("config_file_a_list", G, _config_file(_text("list.yaml", "- a\n- b\n"))),
        Case(
            "config_file_deep_nesting",
            G,
            _config_file(_text("deep.yaml", "a: " + "[" * 5000 + "]" * 5000)),
        ),
        Case(
            "config_file_bad_utf8",
            G,
            _config_file(
                _text("latin.yaml", "trainer:\n  max_steps: \xff\xfe\n".encode("latin-1"))
            ),
            pending=PENDING_CLI,
        ),
    ]


CASES: list[Case] = [*_yaml_tag_cases(), *_value_cases(), *_file_cases()]
