"""`make bench-train`: what training's feed and its workers cost, in one run on this machine.

Each figure is a `jobs/train.py` run of its own (a process, so that each gets a fresh Spark and
TensorFlow), on labeled images written to local disk (no servers needed), the rows alternating
so that the machine's load drifts over both sides of a comparison:

- feed:    the same small CNN on the same 600 photo crops (96x96 RGB, six classes), petastorm's
           cache holding uint8 pixels (1 byte each, cast in TensorFlow) or float32 pixels
           (4 bytes, the former feed): cache bytes per image, training images/s (the epochs'
           step time only: no start-up, no held-out passes) and held-out accuracy
- workers: the digits (about 1,500 to train on, 32x32 grayscale), `--workers 1` (the driver)
           and `--workers 2` (two executors of Spark's `local-cluster[2,1,2048]`): training
           images/s over all workers and held-out accuracy. On a 2-core machine two workers
           share the cores the one had, so this shows the overhead of the collective ops (a
           gradient all-reduce a step), not a speed-up.

Figures are medians over --rounds rounds and go into bench-results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "dev"))
import sample_images  # noqa: E402
from results import merge_results  # noqa: E402

WORK = ROOT / "build" / "bench-train"
QUIET_LOG4J = ROOT / "conf" / "log4j2.properties"


def write_images(directory: Path, images: dict[str, bytes]) -> str:
    for key, body in images.items():
        path = directory / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return directory.as_uri() + "/"


def train(input_uri: str, name: str, master: str, *settings: str) -> dict:
    """One jobs/train.py run; its summary's figures."""
    spark_conf = {"spark.master": master, "spark.ui.enabled": False,
                  "spark.sql.shuffle.partitions": 4}
    command = [sys.executable, str(ROOT / "jobs" / "train.py"), "--input", input_uri,
               "--output", (WORK / "models" / name).as_uri(), "--model-version", "bench",
               "--set", f"spark.conf={json.dumps(spark_conf)}", "--log-level", "WARNING"]
    for setting in settings:
        command += ["--set", setting]
    began = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={
        **os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_SUBMIT_ARGS": f"--driver-java-options "
                               f"-Dlog4j2.configurationFile={QUIET_LOG4J} pyspark-shell"})
    if result.returncode:
        sys.exit(f"{name}: train.py failed:\n{result.stderr[-3000:]}")
    feed = re.search(r"feed\s+(\d+) bytes/image .*?, (\d+) images/s", result.stdout)
    accuracy = re.search(r"held-out accuracy\s+([0-9.]+)", result.stdout)
    figures = {"bytes_per_image": int(feed.group(1)), "img_per_s": int(feed.group(2)),
               "accuracy": float(accuracy.group(1)),
               "wall_s": round(time.monotonic() - began, 1)}
    print(f"   {name}: {figures}", flush=True)
    return figures


def median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    crops = write_images(WORK / "crops", sample_images.photo_crops(per_photo=100))
    digits = write_images(WORK / "digits", sample_images.digit_images()[0])
    feed_settings = ("training.color_mode=rgb", "training.input_height=96",
                     "training.input_width=96", f"training.epochs={args.epochs}")
    digit_settings = (f"training.epochs={args.epochs}",)
    runs: dict[str, list[dict]] = {name: [] for name in ("uint8", "float32", "w1", "w2")}
    for round_index in range(args.rounds):
        print(f"== round {round_index + 1} of {args.rounds}", flush=True)
        for feed in ("uint8", "float32"):
            runs[feed].append(train(crops, f"feed-{feed}", "local[2]", *feed_settings,
                                    f"training.pixel_feed={feed}"))
        runs["w1"].append(train(digits, "workers-1", "local-cluster[2,1,2048]",
                                *digit_settings, "training.workers=1"))
        runs["w2"].append(train(digits, "workers-2", "local-cluster[2,1,2048]",
                                *digit_settings, "training.workers=2"))
    figures = {
        "train_uint8_img_per_s": median(runs["uint8"], "img_per_s"),
        "train_float32_img_per_s": median(runs["float32"], "img_per_s"),
        "petastorm_bytes_per_image_uint8": median(runs["uint8"], "bytes_per_image"),
        "petastorm_bytes_per_image_float32": median(runs["float32"], "bytes_per_image"),
        "train_uint8_accuracy": median(runs["uint8"], "accuracy"),
        "train_float32_accuracy": median(runs["float32"], "accuracy"),
        "train_workers_1_img_per_s": median(runs["w1"], "img_per_s"),
        "train_workers_2_img_per_s": median(runs["w2"], "img_per_s"),
        "train_workers_1_accuracy": median(runs["w1"], "accuracy"),
        "train_workers_2_accuracy": median(runs["w2"], "accuracy"),
        "train_bench_rounds": {name: rows for name, rows in runs.items()},
    }
    machine = (f"make bench-train, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
               f"median of {args.rounds} rounds, {args.epochs} epochs each, on "
               f"{os.cpu_count()} cores shared with other work")
    merge_results(figures, "train_bench_machine", machine)
    print(json.dumps({k: v for k, v in figures.items() if k != "train_bench_rounds"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
