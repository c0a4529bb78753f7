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
    from imagegraph.train.evaluation import CONFUSION_PLOT, CURVES_PLOT, EVALUATION_FILE
    from imagegraph.train.job import run_training

    spark = get_spark(config)
    result = run_training(spark, config, args.input, args.output, resume=args.resume)
    metadata, trained = result.metadata, result.metadata.training
    print(f"model {metadata.tag} -> {metadata.uri}")
    print(f"  classes              {len(metadata.classes)}: {', '.join(metadata.classes)}")
    print(f"  network              {trained['base']} (weights: {trained['weights']}), "
          f"{trained['epochs_trained']} epochs, best {trained['best_epoch']}"
          f"{', stopped early' if trained['early_stopped'] else ''}")
    print(f"  images               {result.train_images} trained, {result.holdout_images} "
          f"validating, {result.test_images} tested, {result.undecodable_images} undecodable")
    print(f"  feed                 {result.cache_bytes_per_image:.0f} bytes/image in the "
          f"petastorm cache ({trained['pixel_feed']}), {result.images_per_second:.0f} "
          f"images/s on {trained['workers']} worker(s)")
    print(f"  images per worker    "
          f"{', '.join(str(count) for count in result.worker_images)} stepped over")
    print(f"  validation accuracy  {metadata.metrics['holdout_accuracy']:.4f} (chose the epoch)")
    print(f"  test accuracy        {metadata.metrics['test_accuracy']:.4f} "
          f"({result.test_images} images that chose nothing)")
    print(f"  evaluation           {metadata.uri}/{EVALUATION_FILE}, "
          f"{metadata.uri}/{CONFUSION_PLOT}, {metadata.uri}/{CURVES_PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(run_job("train.py", main))
