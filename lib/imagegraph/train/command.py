"""The training command, `imagegraph-train` or `spark-submit jobs/train.py`: arguments ->
configuration -> `job.run_training` -> its summary on stdout."""
from __future__ import annotations

import argparse

from imagegraph.cli import prog_name, run_job, start_job, train_parser


def main(argv: list[str] | None = None) -> int:
    """Train with the arguments `argv` (default: the process's); the exit code."""
    prog = prog_name("train.py")
    return run_job(prog, lambda: _train(train_parser(prog).parse_args(argv)))


def _train(args: argparse.Namespace) -> int:
    config = start_job(args)
    if config is None:
        return 0

    from imagegraph.spark_session import get_spark
    from imagegraph.train.job import run_training

    spark = get_spark(config)
    result = run_training(spark, config, args.input, args.output, resume=args.resume)
    print("\n".join(result.summary_lines()))
    return 0
