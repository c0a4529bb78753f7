"""spark-submit entry point: train a CNN on labeled images and export the model with its
evaluation.

    spark-submit jobs/train.py --config conf/local.yaml --input URI --output URI \
        [--base mobilenet_v2 --weights URI] [--workers N] [--resume]

The same command as `imagegraph-train` (`imagegraph.train.command.main`).
"""
import sys

from imagegraph.train.command import main

if __name__ == "__main__":
    sys.exit(main())
