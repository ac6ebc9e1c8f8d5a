"""``domainfm releases``: the table of registered released checkpoints.

One row per release (:data:`~domainfm.pretrained.registry.RELEASED`): its name, the domain
whose plugin takes its input contract (:func:`~domainfm.domains.plugin.domain_of`: each
domain plugin declares its contract class, so no domain is named here), the backbone
architecture, a one-line summary of the input contract (bands or channels, sample rate,
spacing, resolution, normalization …), whether it ships a pretext head, its licence and its
reference. ``--domain D`` keeps one domain's releases; ``--json`` prints the rows as JSON,
with the full input contract.

Example::

    domainfm releases --domain geospatial
    domainfm releases --json
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from domainfm.core.cli_args import OneLineParser
from domainfm.core.plugins import discover_plugins
from domainfm.domains.plugin import all_domains, domain_of, get_domain
from domainfm.pretrained.registry import RELEASED, ReleasedCheckpoint

_SUMMARY_KEYS = (
    "modality",
    "sample_rate",
    "frames",
    "spacing_mm",
    "hu_window",
    "gsd_m",
    "image_size",
    "crop_size",
)
"""Contract fields shown in the summary, in this order, when a release records them."""


def _names(values: Sequence[Any], shown: int = 4) -> str:
    items = [str(v) for v in values]
    if len(items) > shown:
        items = [*items[: shown - 1], "…", items[-1]]
    return ",".join(items)


def _compact(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "x".join(_compact(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def contract_summary(contract: Mapping[str, Any]) -> str:
    """One line of a release's input contract (JSON form), e.g. ``13 bands B01,B02,B03,…,B12;
    gsd_m=10; image_size=224x224; normalization=scale``."""
    parts: list[str] = []
    for key in ("bands", "channels"):
        values = contract.get(key)
        if isinstance(values, list) and values:
            noun = key if len(values) > 1 else key.removesuffix("s")
            parts.append(f"{len(values)} {noun} {_names(values)}")
            break
    parts += [f"{key}={_compact(contract[key])}" for key in _SUMMARY_KEYS if key in contract]
    frontend = contract.get("frontend")
    if isinstance(frontend, Mapping) and frontend.get("architecture"):
        parts.append(f"frontend={frontend['architecture']}")
    normalization = contract.get("normalization")
    if isinstance(normalization, Mapping) and normalization.get("type"):
        parts.append(f"normalization={normalization['type']}")
    return "; ".join(parts)


def release_row(entry: ReleasedCheckpoint) -> dict[str, Any]:
    """A release as plain data (JSON-serializable)."""
    return {
        "name": entry.name,
        "domain": domain_of(entry.contract).name,
        "architecture": entry.architecture,
        "input": contract_summary(entry.input),
        "contract": dict(entry.input),
        "pretext": entry.pretext.objective if entry.pretext is not None else None,
        "license": entry.license,
        "reference": entry.reference,
        "source_layout": entry.source_layout,
    }


def release_rows(domain: str | None = None) -> list[dict[str, Any]]:
    """Every registered release (of ``domain`` only, when given), sorted by domain and name.

    Raises:
        ValueError: naming the installed domains when ``domain`` is not one of them.
    """
    discover_plugins()
    if domain is not None:
        get_domain(domain)  # an unknown domain names the installed ones
    rows = [release_row(RELEASED.get(name)) for name in RELEASED]
    rows = [r for r in rows if domain is None or r["domain"] == domain]
    return sorted(rows, key=lambda r: (r["domain"], r["name"]))


def format_release_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a text table: name, domain, architecture and input on one line, licence and
    reference on the next (indented)."""
    if not rows:
        return "no registered releases"
    widths = {
        key: max(len(key), *(len(str(r[key])) for r in rows))
        for key in ("name", "domain", "architecture")
    }

    def line(name: str, domain: str, architecture: str, rest: str) -> str:
        return (
            f"{name:<{widths['name']}}  {domain:<{widths['domain']}}  "
            f"{architecture:<{widths['architecture']}}  {rest}"
        )

    lines = [line("name", "domain", "architecture", "input")]
    for r in rows:
        pretext = f" [pretext head: {r['pretext']}]" if r["pretext"] else ""
        lines.append(line(r["name"], r["domain"], r["architecture"], r["input"] + pretext))
        lines.append(f"    licence: {r['license']}; reference: {r['reference'] or '-'}")
    lines.append(f"{len(rows)} releases")
    return "\n".join(lines)


def markdown_release_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a Markdown table (domain, release, architecture, input, licence), e.g. for
    documentation; ``|`` in a cell is written as ``/``."""

    def cell(value: Any) -> str:
        return str(value or "-").replace("|", "/")

    lines = [
        "| domain | release | architecture | input contract | pretext head | licence |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {cell(r['domain'])} | `{r['name']}` | `{r['architecture']}` | "
            f"{cell(r['input'])} | {cell(r['pretext'])} | {cell(r['license'])} |"
        )
    return "\n".join(lines)


def releases_command(argv: Sequence[str]) -> int:
    """``domainfm releases [--domain D] [--json | --markdown]``."""
    parser = OneLineParser(
        prog="domainfm releases",
        description="List the registered released checkpoints: architecture, input contract, "
        "licence and reference.",
    )
    parser.add_argument(
        "--domain",
        choices=[p.name for p in all_domains()],
        help="only the releases of this domain",
    )
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print the rows as JSON")
    form.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    rows = release_rows(args.domain)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif args.markdown:
        print(markdown_release_table(rows))
    else:
        print(format_release_table(rows))
    return 0
