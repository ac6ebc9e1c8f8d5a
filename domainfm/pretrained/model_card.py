"""Model cards: the ``README.md`` of an export folder, in the Hugging Face model-card format.

An export (``config.json`` + ``model.safetensors``) is what a Hugging Face model repository
holds; the card beside them says what the weights expect and where they come from, so that a
folder pushed as is (or copied to a colleague) is self-describing. The card opens with the
YAML metadata block the Hub reads (``library_name``, ``license``, ``tags``), then gives the
input contract, provenance, licence, intended use and how to load the weights — all from
``config.json``, nothing invented: a field the config lacks is written as not recorded.

Example::

    >>> text = model_card(config)             # config: an export's config.json content
    >>> (out / MODEL_CARD_NAME).write_text(text)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MODEL_CARD_NAME = "README.md"

_NOT_RECORDED = "not recorded"


def _yaml_scalar(value: str) -> str:
    """A YAML-safe scalar (JSON strings are valid YAML)."""
    return json.dumps(value)


def _contract_rows(contract: Mapping[str, Any]) -> list[str]:
    rows = ["| field | value |", "|---|---|"]
    for key, value in contract.items():
        shown = json.dumps(value) if not isinstance(value, str) else value
        rows.append(f"| `{key}` | {shown.replace('|', '/')} |")
    if len(rows) == 2:
        rows.append(f"| (none) | {_NOT_RECORDED} |")
    return rows


def model_card(config: Mapping[str, Any], *, license: str | None = None) -> str:
    """The model card (Markdown with YAML metadata) of an export described by ``config``.

    Args:
        config: the export's ``config.json`` content (architecture, kwargs, domain, input,
            provenance, recipe).
        license: the weights' licence (an SPDX id or a sentence); default: the config's
            ``license`` or ``provenance.license``, else "other" with a note to set it.
    """
    provenance = config.get("provenance") or {}
    licence = (
        license
        or config.get("license")
        or (provenance.get("license") if isinstance(provenance, Mapping) else None)
    )
    domain = config.get("domain") or _NOT_RECORDED
    architecture = str(config.get("architecture", _NOT_RECORDED))
    contract = config.get("input") or {}
    tags = ["domainfm", str(domain), architecture]
    lines = [
        "---",
        "library_name: domainfm",
        f"license: {_yaml_scalar(licence) if licence else 'other'}",
        "tags:",
        *[f"- {_yaml_scalar(t)}" for t in tags if t != _NOT_RECORDED],
        "---",
        "",
        f"# {architecture} backbone ({domain})",
        "",
        "A backbone exported by domainfm: `config.json` (architecture, constructor arguments, "
        "input contract, provenance, training recipe) and `model.safetensors` (weights only; "
        "loading never executes code).",
        "",
        "## Input contract",
        "",
        "Inputs must match this contract (channels or bands in this order, the same "
        "spacing, resolution or sample rate, the same normalization):",
        "",
        *_contract_rows(contract if isinstance(contract, Mapping) else {}),
        "",
        "## Architecture",
        "",
        f"`{architecture}` with",
        "",
        "```json",
        json.dumps(config.get("kwargs", {}), indent=2, sort_keys=True),
        "```",
        "",
        "## Provenance",
        "",
        "```json",
        json.dumps(provenance, indent=2, sort_keys=True, default=str),
        "```",
        "",
        "## Licence",
        "",
        licence
        or "Not recorded: set it before sharing (the weights inherit the terms of the data "
        "and of any released checkpoint they were initialized from).",
        "",
        "## Intended use",
        "",
        "A pretrained backbone for fine-tuning or feature extraction on data that matches the "
        "input contract. It is a research artefact: it was not validated for clinical, "
        "operational or safety-critical decisions, and its behaviour on data outside the "
        "contract (other sensors, scanners, sample rates or normalizations) is unknown.",
        "",
        "## Load",
        "",
        "```python",
        "from domainfm import load_backbone",
        "",
        'model, report = load_backbone("path/to/this/folder")  # strict, every key reported',
        "print(report)",
        "```",
        "",
        "Offline: a local Hugging Face cache snapshot of this repository loads the same way "
        "(`load_backbone` accepts the snapshot folder or the `models--ORG--NAME` cache folder).",
        "",
    ]
    return "\n".join(lines)
