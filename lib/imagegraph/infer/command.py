"""The inference command, `imagegraph-infer` or `spark-submit jobs/infer.py`: arguments ->
configuration -> `job.run_inference` -> the run summary on stdout (see `runs.report`) and the
exit code (`--help` lists them)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from imagegraph.cli import infer_parser, input_source, run_command, start_job


def main(argv: Sequence[str] | None = None) -> int:
    """Run inference with the arguments `argv` (default: the process's); the exit code."""
    return run_command("infer.py", infer_parser, _infer, argv)


def _infer(args: argparse.Namespace, prog: str) -> int:
    config = start_job(args)
    if config is None:
        return 0

    from imagegraph.graph.bulk_load import check_bulk_settings
    from imagegraph.graph.connection import validate_endpoint
    from imagegraph.infer.job import run_inference
    from imagegraph.infer.precision import precision_line
    from imagegraph.spark_session import get_spark

    if config.graph.enabled:
        validate_endpoint(config.graph.endpoint)
    if config.graph.enabled and config.graph.load == "bulk":
        check_bulk_settings(config.graph, args.output)
    spark = get_spark(config)
    report = run_inference(spark, config, input_source(args), args.model, args.output,
                           shard=args.shard, resume=args.resume)
    print("\n".join(report.summary_lines()))
    if precision_line(report):
        print(precision_line(report))
    if not report.reconciles():
        return 1
    if report.failed_fraction > config.run.max_failed_fraction:
        print(f"{prog}: {report.failed_fraction:.1%} of the objects processed were "
              f"dead-lettered, over the limit of {config.run.max_failed_fraction:.1%} "
              f"(run.max_failed_fraction)", file=sys.stderr)
        return 3
    return 0
