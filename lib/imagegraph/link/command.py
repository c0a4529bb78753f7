"""The link command, `imagegraph-link` or `spark-submit jobs/link.py`: arguments ->
configuration -> `job.run_link` -> its summary on stdout."""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Sequence

from imagegraph.cli import link_parser, run_command, start_job


def main(argv: Sequence[str] | None = None) -> int:
    """Link with the arguments `argv` (default: the process's); the exit code."""
    return run_command("link.py", link_parser, _link, argv)


def _link(args: argparse.Namespace, prog: str) -> int:
    config = start_job(args)
    if config is None:
        return 0

    from imagegraph.graph.connection import validate_endpoint, with_resolved_region
    from imagegraph.link.job import run_link
    from imagegraph.spark_session import get_spark

    validate_endpoint(config.graph.endpoint)  # what needs no Spark is checked before it starts
    config = replace(config, graph=with_resolved_region(config.graph))
    spark = get_spark(config)
    report = run_link(spark, config, args.output, args.model, relink=args.relink)
    print("\n".join(report.summary_lines()))
    return 0
