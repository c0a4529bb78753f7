"""spark-submit entry point: classify images and upsert the results into the graph.

    spark-submit jobs/infer.py --config conf/local.yaml --input URI --model URI --output URI \
        [--shard I/N] [--resume] [--precision int8]

The same command as `imagegraph-infer` (`imagegraph.infer.command.main`). Exit codes: `--help`
lists them (0 done, 1 counts that do not reconcile, 2 usage, 3 too many dead letters,
4 crashed).
"""
import sys

from imagegraph.infer.command import main

if __name__ == "__main__":
    sys.exit(main())
