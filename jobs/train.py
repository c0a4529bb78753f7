"""spark-submit entry point: train a CNN on labeled images and export the model with its
evaluation.

    spark-submit jobs/train.py --config conf/local.yaml --input URI --output URI \
        [--base mobilenet_v2 --weights URI] [--workers N] [--resume]
"""
import sys

from imagegraph.cli import config_from_args, config_yaml, run_job, setup_logging, train_parser


def main() -> int:
    args = train_parser().parse_args()
    setup_logging(args.log_level)
    config = config_from_args(args)
    if args.print_config:
        print(config_yaml(config), end="")
        return 0

    from imagegraph.spark_session import get_spark
    from imagegraph.train.job import run_training

    spark = get_spark(config)
    result = run_training(spark, config, args.input, args.output, resume=args.resume)
    print("\n".join(result.summary_lines()))
    return 0


if __name__ == "__main__":
    sys.exit(run_job("train.py", main))
