"""spark-submit entry point: train a CNN on labeled images and export the model.

    spark-submit jobs/train.py --config conf/local.yaml --input URI --output URI
"""
import sys

from imagegraph.cli import config_from_args, run_job, setup_logging, train_parser


def main() -> int:
    args = train_parser().parse_args()
    setup_logging(args.log_level)
    config = config_from_args(args)

    from imagegraph.spark_session import get_spark
    from imagegraph.training import run_training

    spark = get_spark(config)
    result = run_training(spark, config, args.input, args.output)
    metadata = result.metadata
    print(f"model {metadata.tag} -> {metadata.uri}")
    print(f"  classes              {len(metadata.classes)}: {', '.join(metadata.classes)}")
    print(f"  images               {result.train_images} trained, {result.holdout_images} "
          f"held out, {result.undecodable_images} undecodable")
    print(f"  held-out accuracy    {metadata.metrics['holdout_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_job("train.py", main))
