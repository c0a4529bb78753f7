"""spark-submit entry point: link images to each other in the graph (same content, near
duplicates, similar) from what jobs/infer.py wrote under --output.

    spark-submit jobs/link.py --config conf/local.yaml --output URI --model NAME@VERSION \
        [--relink]

The same command as `imagegraph-link` (`imagegraph.link.command.main`). Exit codes: `--help`
lists them (0 done, 2 usage, configuration or a failed graph write, after which no run is
recorded as linked, so a rerun does it again; 4 crashed).
"""
import sys

from imagegraph.link.command import main

if __name__ == "__main__":
    sys.exit(main())
