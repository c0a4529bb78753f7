"""`make bench`, the split of one task's cores: read-and-decode threads against model threads.

On EMR a task has `spark.task.cpus` 2 cores (emr/configurations.json). In them it reads and
decodes batch n + 1 on `input.read_threads` threads while the model runs batch n on the
task's cores' worth of TensorFlow Lite threads (`imagegraph.infer.classify.classify_stream`).
This runs that task code itself, without Spark, pinned to 2 cores, for model threads T in
(1, 2) and read threads R in (2, 4, 8), on two mixes:

- jpegs:   the inference bench's 500x375 JPEGs (decoding 1.6 ms, the model's side is larger)
- uploads: the upload corpus (dev/upload_corpus.py at --uploads-scale: phone JPEGs, HEIC,
           PNG screenshots, WebP; decoding is the larger side)

Each configuration classifies its mix's files, cycled to --images objects, in Arrow batches
of `inference.arrow_batch_size` and model batches of `inference.batch_size` (MobileNetV2
224x224, `weights=None`, float32), after one warm-up pass. It records images/s (wall),
core-milliseconds an image (the process's user and system CPU time: what the work costs
the cores, less sensitive than wall time to other load on a shared machine) and the share
of the model's time spent waiting for reads and decodes (`ModelTimes`, the run report's
"model" line). Rounds interleave the configurations, each round in a rotated order; each
figure is the median of --rounds. Results merge into bench-results.json under `task_split`.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "dev"))
from inference_bench import export_mobilenet, make_jpegs, write_corpus  # noqa: E402
from results import merge_results  # noqa: E402
from upload_corpus import upload_corpus  # noqa: E402

TASK_CPUS = 2
MODEL_THREADS = (1, 2)
READ_THREADS = (2, 4, 8)


def cpu_s() -> float:
    """This process's user and system CPU seconds so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def arrow_batches(files: list[Path], count: int, size: int) -> list[tuple]:
    """`count` objects (`files` cycled) as (uris, sizes, etags) batches of `size`."""
    uris = [f"file://{path}" for path in itertools.islice(itertools.cycle(files), count)]
    chunks = [uris[start:start + size] for start in range(0, count, size)]
    return [(pd.Series(chunk), pd.Series([None] * len(chunk), dtype="float64"),
             pd.Series([None] * len(chunk), dtype="object")) for chunk in chunks]


def timed_task(model, batches: list[tuple], metadata, settings) -> dict:
    """Images/s, core-ms an image and the model's waiting share of one pass over `batches`."""
    from imagegraph.infer.classify import STATUS_OK, ModelTimes, classify_stream

    times = ModelTimes()
    count = sum(len(uris) for uris, _, _ in batches)
    cpu, wall = cpu_s(), time.perf_counter()
    frames = list(classify_stream(model, iter(batches), metadata, settings, times))
    wall, cpu = time.perf_counter() - wall, cpu_s() - cpu
    failed = sum(int((frame["status"] != STATUS_OK).sum()) for frame in frames)
    if failed:
        raise RuntimeError(f"{failed} of {count} objects were not classified")
    return {"img_per_s": count / wall, "core_ms_per_img": 1000 * cpu / count,
            "model_waited": times.waited_s / (times.waited_s + times.ran_s)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024,
                        help="objects each configuration classifies per round (default 1024: "
                             "4 Arrow batches)")
    parser.add_argument("--uploads-scale", type=int, default=4,
                        help="the upload corpus at this scale, 13 images each (default 4)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds over every configuration; medians reported (default 3)")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))[:TASK_CPUS]
    os.sched_setaffinity(0, cores)  # the task's share: its threads and TensorFlow Lite's

    from imagegraph.config import load_config
    from imagegraph.infer.classify import InferenceSettings
    from imagegraph.model.cache import ModelCache
    from imagegraph.storage.object_reader import ReaderSettings

    whole = load_config(str(ROOT / "conf" / "local.yaml"))
    config = whole.inference
    work = Path(tempfile.mkdtemp(prefix="imagegraph-task-split-"))
    try:
        make_jpegs(work / "jpegs", 256)
        write_corpus(work / "uploads", upload_corpus(scale=args.uploads_scale))
        metadata = export_mobilenet(work / "model")
        files = {p.name: p.read_bytes() for p in (work / "model").iterdir()}
        models = {threads: ModelCache().get(metadata, files, config.batch_size, threads=threads,
                                            runtime=config.runtime)
                  for threads in MODEL_THREADS}
        mixes = {mix: arrow_batches(sorted((work / mix).iterdir()), args.images,
                                    config.arrow_batch_size) for mix in ("jpegs", "uploads")}
        configurations = list(itertools.product(mixes, MODEL_THREADS, READ_THREADS))
        rounds: dict[tuple, list[dict]] = {c: [] for c in configurations}
        for number in range(args.rounds + 1):  # round 0 warms every configuration up
            start = number % len(configurations)
            for mix, model_threads, read_threads in (configurations[start:] +
                                                     configurations[:start]):
                settings = InferenceSettings(
                    top_k=5, batch_size=config.batch_size,
                    max_image_pixels=config.max_image_pixels, threads=model_threads,
                    reader=ReaderSettings.from_config(whole.s3, read_threads,
                                                      config.max_image_bytes),
                    runtime=config.runtime)
                figures = timed_task(models[model_threads], mixes[mix], metadata, settings)
                if number:
                    rounds[(mix, model_threads, read_threads)].append(figures)
                print(f"round {number} {mix} T={model_threads} R={read_threads}: "
                      f"{figures['img_per_s']:.1f} images/s, "
                      f"{figures['core_ms_per_img']:.1f} core-ms an image, model waited "
                      f"{100 * figures['model_waited']:.0f}%", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    split: dict = {}
    for (mix, model_threads, read_threads), runs in rounds.items():
        split.setdefault(mix, {})[f"model_threads_{model_threads}_read_threads_{read_threads}"] = {
            key: round(float(np.median([run[key] for run in runs])), 3) for key in runs[0]}
    merge_results({"task_split": split}, "task_split_machine",
                  f"{os.cpu_count()} cores, pinned to {len(cores)}, MobileNetV2 224x224 "
                  f"float32 ({config.runtime}), {args.images} objects a configuration "
                  f"(256 JPEGs 500x375, or the upload corpus at scale {args.uploads_scale}, "
                  f"cycled), Arrow batches of {config.arrow_batch_size}, median of "
                  f"{args.rounds} rounds")
    print(json.dumps(split, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
