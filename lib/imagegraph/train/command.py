"""The training command, `imagegraph-train` or `spark-submit jobs/train.py`: arguments ->
configuration -> `job.run_training` -> its summary on stdout."""
from __future__ import annotations

import argparse
from typing import Sequence

from imagegraph.cli import run_command, start_job, train_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Train with the arguments `argv` (default: the process's); the exit code."""
    return run_command("train.py", train_parser, _train, argv)


def _train(args: argparse.Namespace, prog: str) -> int:
    config = start_job(args)
    if config is None:
        return 0

    from imagegraph.spark_session import get_spark
    from imagegraph.train.job import run_training

    spark = get_spark(config)
    result = run_training(spark, config, args.input, args.output, resume=args.resume)
    print("\n".join(result.summary_lines()))
    return 0
