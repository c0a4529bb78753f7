"""spark-submit entry point: link images to each other in the graph (same content, near
duplicates, similar) from what jobs/infer.py wrote under --output.

    spark-submit jobs/link.py --config conf/local.yaml --output URI --model NAME@VERSION \
        [--relink]

Exit codes: `--help` lists them (0 done, 2 usage, configuration or a failed graph write, after
which no run is recorded as linked, so a rerun does it again; 4 crashed).
"""
import sys

from imagegraph.cli import config_from_args, config_yaml, link_parser, run_job, setup_logging


def main() -> int:
    args = link_parser().parse_args()
    setup_logging(args.log_level)
    config = config_from_args(args)
    if args.print_config:
        print(config_yaml(config), end="")
        return 0

    from imagegraph.graph.connection import validate_endpoint
    from imagegraph.link.job import run_link
    from imagegraph.spark_session import get_spark

    validate_endpoint(config.graph.endpoint)
    spark = get_spark(config)
    report = run_link(spark, config, args.output, args.model, relink=args.relink)
    print("\n".join(report.summary_lines()))
    return 0


if __name__ == "__main__":
    sys.exit(run_job("link.py", main))
