"""The inference command, `imagegraph-infer` or `spark-submit jobs/infer.py`: arguments ->
configuration -> `job.run_inference` -> the run summary on stdout (see `runs.report`), the
command to run next, and the exit code (`--help` lists them)."""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from typing import Sequence

from imagegraph.cli import CONSOLE_PREFIX, infer_parser, input_source, run_command, start_job


def main(argv: Sequence[str] | None = None) -> int:
    """Run inference with the arguments `argv` (default: the process's); the exit code."""
    return run_command("infer.py", infer_parser, _infer, argv)


def _infer(args: argparse.Namespace, prog: str) -> int:
    config = start_job(args)
    if config is None:
        return 0

    from imagegraph.graph.bulk_load import check_bulk_settings
    from imagegraph.graph.connection import validate_endpoint, with_resolved_region
    from imagegraph.infer.job import run_inference
    from imagegraph.infer.precision import precision_line
    from imagegraph.spark_session import get_spark

    if config.graph.enabled:  # what needs no Spark is checked before Spark starts
        validate_endpoint(config.graph.endpoint)
        config = replace(config, graph=with_resolved_region(config.graph))
    if config.graph.enabled and config.graph.load == "bulk":
        check_bulk_settings(config.graph, args.output)
    spark = get_spark(config)
    report = run_inference(spark, config, input_source(args), args.model, args.output,
                           shard=args.shard, resume=args.resume)
    print("\n".join(report.summary_lines()))
    precision = precision_line(report)
    if precision:
        print(precision)
    print(f"  next                 {next_command(args, prog, report.run_id, config.graph.enabled)}")
    if not report.reconciles():
        return 1
    if report.failed_fraction > config.run.max_failed_fraction:
        print(f"{prog}: {report.failed_fraction:.1%} of the objects processed were "
              f"dead-lettered, over the limit of {config.run.max_failed_fraction:.1%} "
              f"(run.max_failed_fraction)", file=sys.stderr)
        return 3
    return 0


def next_command(args: argparse.Namespace, prog: str, run_id: str, graph: bool) -> str:
    """The command that shows what run `run_id` wrote, as the shell takes it, with the run's
    `--config` and graph options: the graph's query of the run, or with the graph off where
    the output stands; a console script when `prog` is one, else `python -m`."""
    from imagegraph.graph import query
    from imagegraph.runs import status

    if prog.startswith(CONSOLE_PREFIX):
        command = [CONSOLE_PREFIX + ("query" if graph else "status")]
    else:
        command = shlex.split(query.PROG if graph else status.PROG)
    if args.config:
        command += ["--config", args.config]
    if not graph:
        return shlex.join([*command, "--output", args.output])
    if args.gremlin_endpoint:
        command += ["--gremlin-endpoint", args.gremlin_endpoint]
    for override in args.overrides:
        if override.startswith("graph."):
            command += ["--set", override]
    return shlex.join([*command, "run", run_id])
