"""spark-submit entry point: classify images and upsert the results into the graph.

    spark-submit jobs/infer.py --config conf/local.yaml --input URI --model URI --output URI \
        --gremlin-endpoint ws://HOST:PORT/gremlin
"""
import sys

from imagegraph.cli import config_from_args, infer_parser, run_job, setup_logging


def main() -> int:
    args = infer_parser().parse_args()
    setup_logging(args.log_level)
    config = config_from_args(args)

    from imagegraph.graph.connection import validate_endpoint
    from imagegraph.inference_job import run_inference
    from imagegraph.spark_session import get_spark

    if config.graph.enabled:
        validate_endpoint(config.graph.endpoint)
    spark = get_spark(config)
    report = run_inference(spark, config, args.input, args.model, args.output)
    print("\n".join(report.summary_lines()))
    return 0 if report.reconciles() else 1


if __name__ == "__main__":
    sys.exit(run_job("infer.py", main))
