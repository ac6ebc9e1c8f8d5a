"""``domainfm prepare DOMAIN SRC_DIR OUT_DIR``: validate and preprocess a folder of raw inputs
once into streamable LitData shards with a manifest, through the domain's preparer
(:meth:`~domainfm.domains.plugin.DomainPlugin.preparer`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from domainfm.core.cli_args import OneLineParser, argument_type, non_negative_int
from domainfm.data.data_root import resolve_data_path
from domainfm.data.preparer import parse_chunk_bytes
from domainfm.data.shards import prepare_shards
from domainfm.domains.plugin import UnsupportedByDomain, all_domains


def prepare_command(argv: Sequence[str]) -> int:
    """Run ``domainfm prepare DOMAIN SRC_DIR OUT_DIR``; returns the exit status."""
    parser = OneLineParser(
        prog="domainfm prepare",
        description=(
            "Validate and preprocess a folder of raw inputs once into streamable LitData "
            "shards with a manifest (counts, shapes, statistics, source checksums). Bad "
            "inputs are skipped and listed; re-running is a no-op; new files are appended."
        ),
    )
    domains = parser.add_subparsers(dest="domain", required=True, metavar="DOMAIN")
    for plugin in all_domains():
        sub = domains.add_parser(plugin.name, help=plugin.summary, description=plugin.summary)
        sub.add_argument("src_dir", help="folder of raw inputs (searched recursively)")
        sub.add_argument("out_dir", help="prepared folder (created, or appended to)")
        sub.add_argument("--num-workers", type=non_negative_int, default=os.cpu_count() or 1)
        sub.add_argument(
            "--chunk-bytes",
            type=argument_type(parse_chunk_bytes, "size"),
            default="64MB",
            help="target shard size (bytes, or with a unit: 64MB, 1GB)",
        )
        sub.add_argument("--dtype", choices=["float16", "float32"], help="stored dtype")
        plugin.add_prepare_arguments(sub)
        sub.set_defaults(plugin=plugin)
    args = parser.parse_args(argv)
    try:
        preparer = args.plugin.preparer(args)
    except UnsupportedByDomain as err:
        parser.error(str(err))
    summary = prepare_shards(
        preparer,
        resolve_data_path(args.src_dir),
        args.out_dir,
        num_workers=args.num_workers,
        chunk_bytes=args.chunk_bytes,
        progress=True,
    )
    print(f"domainfm prepare: {summary.describe()}")
    return 0
