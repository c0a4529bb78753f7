"""spark-submit entry point: classify images and upsert the results into the graph.

    spark-submit jobs/infer.py --config conf/local.yaml --input URI --model URI --output URI \
        [--shard I/N] [--resume] [--precision int8]

Exit codes: `--help` lists them (0 done, 1 counts that do not reconcile, 2 usage, 3 too many
dead letters, 4 crashed).
"""
import sys

from imagegraph.cli import (
    config_from_args,
    config_yaml,
    infer_parser,
    input_source,
    run_job,
    setup_logging,
)


def main() -> int:
    args = infer_parser().parse_args()
    setup_logging(args.log_level)
    config = config_from_args(args)
    if args.print_config:
        print(config_yaml(config), end="")
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
        print(f"infer.py: {report.failed_fraction:.1%} of the objects processed were "
              f"dead-lettered, over the limit of {config.run.max_failed_fraction:.1%} "
              f"(run.max_failed_fraction)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(run_job("infer.py", main))
