"""The link command, `imagegraph-link` or `spark-submit jobs/link.py`: arguments ->
configuration -> `job.run_link` -> its summary on stdout."""
from __future__ import annotations

import argparse

from imagegraph.cli import link_parser, prog_name, run_job, start_job


def main(argv: list[str] | None = None) -> int:
    """Link with the arguments `argv` (default: the process's); the exit code."""
    prog = prog_name("link.py")
    return run_job(prog, lambda: _link(link_parser(prog).parse_args(argv)))


def _link(args: argparse.Namespace) -> int:
    config = start_job(args)
    if config is None:
        return 0

    from imagegraph.graph.connection import validate_endpoint
    from imagegraph.link.job import run_link
    from imagegraph.spark_session import get_spark

    validate_endpoint(config.graph.endpoint)
    spark = get_spark(config)
    report = run_link(spark, config, args.output, args.model, relink=args.relink)
    print("\n".join(report.summary_lines()))
    return 0
