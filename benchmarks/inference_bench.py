"""`make bench`, inference part: images per second, steady state, in one run on this machine.

Real-photo JPEGs of 500x375 (random crops and resizes of scikit-image's photos) on local disk,
MobileNetV2 at 224x224 built with `weights=None` (1,000 classes), Spark `local[2]`. Variants:

- decode:            the job's decoder alone (`imagegraph.imaging.decode.decode_image`), one thread,
                     bytes already in memory: what decoding costs a core per image
- decode_uploads:    the same on the upload corpus (dev/upload_corpus.py: 12 and 3 MP phone
                     JPEGs with EXIF rotation, a 12 MP HEIC, PNG screenshots, WebP,
                     thumbnails; N = its images at --uploads-scale), with each kind's and
                     each format's mean decode time, and uploads_ceiling_img_per_s: what the
                     machine's cores allow on that mix, decode plus the bare model
- bare_model:        the job's compiled fixed-batch function (its configured runtime,
                     TensorFlow Lite by default) on pre-decoded batches, no Spark
- bare_model_int8:   the same with inference.precision int8: full integer quantization,
                     calibrated on INT8_SAMPLE of the images (cold: conversion and check)
- bare_model_tensorflow: the same as a tf.function (inference.runtime: tensorflow)
- job:               imagegraph's inference run, listing to Parquet (workers read the
                     files), graph writes off
- job_int8:          the same with inference.precision int8; the artifact has no calibration
                     sample, so every run draws 2 x INT8_SAMPLE images from its input,
                     converts and checks on the driver (NO_BOUNDS: the untrained model's
                     answers are recorded, not required)
- job_uploads, job_uploads_int8: job and job_int8 on the upload corpus as files, at
                     --job-uploads-scale: what the job makes of the mix against
                     uploads_ceiling_img_per_s (int8 drawing N / 4 images for each half of
                     its sample: 2 x INT8_SAMPLE would be the whole input of N and not of 2N,
                     and the driver's draw decodes phone photos)
- job_graph_off, job_graph_on: the same run in 4 chunks, graph writes off and on (into a
                     local Gremlin Server): what writing the graph costs a backfill whose
                     chunks are pipelined (chunk k written while chunk k+1 is classified)
- naive_udf:         an iterator pandas UDF that builds the model in each task and decodes and
                     predicts row by row
- predict_batch_udf: Spark's own `pyspark.ml.functions.predict_batch_udf`, decoding the same
                     way inside its predict function

Each Spark variant also records its Python workers' peak resident memory
(`<variant>_worker_peak_mib`, benchmarks/worker_memory.py) at the configured batch sizes.

A backfill amortises start-up (JVM, Python workers, model load), so each figure is the steady
rate N / (t(2N) - t(N)), both timed after a first, cold run on N images whose time is recorded
beside it (without that, the cold run's start-up would be subtracted from t(2N) and inflate the
rate). Each variant then runs --rounds rounds of N and 2N and reports the median round's rate:
the JVM's JIT and this shared machine make single rounds vary by 15% or more. The naive UDF
runs --naive-rounds (default 1: a round takes it seven minutes). The Spark variants share one
input partitioning. Results are merged into bench-results.json, each variant's rounds beside
its median.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "dev"))
import services  # noqa: E402
import worker_memory  # noqa: E402
from results import merge_results, read_results  # noqa: E402

from imagegraph.infer.answer_check import CheckBounds  # noqa: E402

SIZE = 224
INT8_SAMPLE = 64
"""Images int8 is calibrated on, and as many it is checked on (the job's defaults are 200 and
700: 64 keeps the per-run conversion short on this shared machine)."""
NO_BOUNDS = CheckBounds(min_agreement=0.0, max_score_delta=1.0, min_embedding_cosine=-1.0)
"""The answer check's bounds in the bench: int8 is used unless every check image's top-1 class
differs (at 0 the binomial test passes any count but all)."""
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")


def make_jpegs(directory: Path, count: int, seed: int = 7) -> None:
    """`count` JPEGs of 500x375 from random crops of scikit-image's photos."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS]
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        photo = photos[n % len(photos)]
        width, height = photo.size
        crop_w = int(rng.integers(width // 2, width + 1))
        crop_h = int(rng.integers(height // 2, height + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        image = photo.crop((left, top, left + crop_w, top + crop_h)).resize((500, 375))
        image.save(directory / f"img{n:05d}.jpg", format="JPEG", quality=90)


def export_mobilenet(directory: Path):
    import tensorflow as tf

    from imagegraph.model.artifact import ModelMetadata, write_artifact

    model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(SIZE, SIZE, 3))
    metadata = ModelMetadata(name="mobilenet_v2", version="bench", input_height=SIZE,
                             input_width=SIZE, channels=3, preprocessing="mobilenet_v2",
                             classes=tuple(f"c{i}" for i in range(1000)))
    write_artifact(str(directory), model, metadata)
    return metadata


def steady_rates(cold_s: float, rounds: list[tuple[float, float]], n: int) -> dict:
    """Images/s of each round (t(N), t(2N)) in seconds; the median round's is the figure."""
    rates = [n / (t_2n - t_n) for t_n, t_2n in rounds]
    return {"img_per_s": round(float(np.median(rates)), 2),
            "rounds_img_per_s": [round(rate, 2) for rate in rates],
            f"cold_s_for_{n}": round(cold_s, 1)}


def bare_model(model_dir: Path, metadata, images: dict[int, Path], batch_size: int,
               runtime: str, precision: str, rounds: int
               ) -> tuple[float, list[tuple[float, float]]]:
    """Cold time and `rounds` (t(N), t(2N)) on pre-decoded images with the job's compiled
    function in `runtime` and `precision` on every core; "cold" adds loading, converting
    (int8: calibrating on INT8_SAMPLE of the images, checking on as many others) or tracing
    the model to the first N."""
    from imagegraph.imaging.decode import decode_image
    from imagegraph.infer.classify import InferenceSettings
    from imagegraph.infer.precision import quantize_and_check
    from imagegraph.model.cache import ModelCache
    from imagegraph.model.calibration import INPUT, CalibrationSample

    pixels = {count: np.stack([decode_image(p.read_bytes(), SIZE, SIZE, 3, 10**8, 10**9).pixels
                               for p in sorted(directory.iterdir())])
              for count, directory in images.items()}
    started = time.perf_counter()
    files = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    if precision == "int8":
        half = min(INT8_SAMPLE, max(images) // 2)
        sample = pixels[max(images)][:2 * half]
        settings = InferenceSettings(top_k=1, batch_size=batch_size, max_image_pixels=10**9,
                                     threads=os.cpu_count(), reader=None, runtime=runtime)
        files = quantize_and_check(files, metadata, settings,
                                   CalibrationSample(sample[:half], sample[half:], None, INPUT),
                                   NO_BOUNDS).model_files
    model = ModelCache().get(metadata, files, batch_size, threads=os.cpu_count(),
                             runtime=runtime, precision=precision)
    model.predict(np.zeros((1, SIZE, SIZE, 3), np.uint8))  # traces the compiled function
    loading = time.perf_counter() - started

    def timed(count: int) -> float:
        started = time.perf_counter()
        for start in range(0, count, batch_size):
            model.predict(pixels[count][start:start + batch_size])
        return time.perf_counter() - started

    n = min(images)
    cold = loading + timed(n)
    return cold, [(timed(n), timed(2 * n)) for _ in range(rounds)]


def decode_only(images: dict[int, Path], rounds: int) -> tuple[float, list[tuple[float, float]]]:
    """Cold time and `rounds` (t(N), t(2N)) of decoding the files' bytes, read beforehand, to
    the model's input size on one thread."""
    from imagegraph.imaging.decode import decode_image

    data = {count: [p.read_bytes() for p in sorted(directory.iterdir())]
            for count, directory in images.items()}

    def timed(count: int) -> float:
        started = time.perf_counter()
        for content in data[count]:
            decode_image(content, SIZE, SIZE, 3, 10**8, 10**9)
        return time.perf_counter() - started

    n = min(images)
    return timed(n), [(timed(n), timed(2 * n)) for _ in range(rounds)]


def decode_uploads(scale: int, rounds: int
                   ) -> tuple[float, list[tuple[float, float]], dict[str, float]]:
    """Cold time and `rounds` (t(N), t(2N)) of decoding the upload corpus at `scale` (N
    images) and twice that (its first N images are the same bytes) to the model's input size
    on one thread, the bytes made beforehand; and each image's median decode time over the
    rounds' runs of 2N, milliseconds by key."""
    from upload_corpus import upload_corpus

    from imagegraph.imaging.decode import decode_image

    corpora = [upload_corpus(scale=scale), upload_corpus(scale=2 * scale)]
    times: dict[str, list[float]] = {key: [] for key in corpora[1]}

    def timed(corpus: dict[str, bytes]) -> float:
        total = 0.0
        for key, content in corpus.items():
            started = time.perf_counter()
            decode_image(content, SIZE, SIZE, 3, 10**8, 10**9)
            elapsed = time.perf_counter() - started
            total += elapsed
            if corpus is corpora[1]:
                times[key].append(elapsed)
        return total

    cold = timed(corpora[0])
    timings = [(timed(corpora[0]), timed(corpora[1])) for _ in range(rounds)]
    return cold, timings, {key: 1000 * float(np.median(t)) for key, t in times.items()}


def uploads_figures(image_ms: dict[str, float]) -> dict:
    """Mean decode milliseconds an image of each kind and each format of the upload mix, from
    each image's decode milliseconds by key ('uploads/<kind>/<n>.<ext>')."""
    from upload_corpus import MIX

    kinds = {kind.name: kind for kind in MIX}
    by_kind: dict[str, list[float]] = {}
    by_format: dict[str, list[float]] = {}
    for key, ms in image_ms.items():
        kind = kinds[key.split("/")[1]]
        by_kind.setdefault(kind.name, []).append(ms)
        by_format.setdefault(kind.format, []).append(ms)
    return {"decode_uploads_ms_by_kind": {k: round(float(np.mean(v)), 2)
                                          for k, v in by_kind.items()},
            "decode_uploads_ms_by_format": {k: round(float(np.mean(v)), 2)
                                            for k, v in by_format.items()}}


def uploads_ceilings(cores: int, decode_img_per_s: float, results: dict) -> dict:
    """Images/s `cores` cores allow on the upload mix, in each precision whose bare model's
    rate (images/s on all `cores`) `results` holds: cores / (decode + model core-seconds an
    image), decoding one image costing a core 1 / `decode_img_per_s` seconds."""
    ceilings = {}
    for precision in ("", "_int8"):
        model_img_per_s = results.get(f"bare_model{precision}_img_per_s")
        if model_img_per_s:
            ceilings[f"uploads_ceiling{precision}_img_per_s"] = round(
                cores / (1 / decode_img_per_s + cores / model_img_per_s), 2)
    return ceilings


def write_uploads(directory: Path, scale: int) -> dict[int, Path]:
    """The upload corpus at `scale` and twice that, as files under `directory` (one folder
    each, named '<kind>-<n>.<ext>'), by image count. The corpus is made once, at twice
    `scale`: at `scale` it is the same bytes, the first `kind.count * scale` of each kind."""
    from upload_corpus import MIX, upload_corpus

    counts = {kind.name: kind.count * scale for kind in MIX}
    corpus = upload_corpus(scale=2 * scale)
    halves = {len(corpus) // 2: {key: content for key, content in corpus.items()
                                 if int(key.split("/")[2].split(".")[0]) <
                                 counts[key.split("/")[1]]},
              len(corpus): corpus}
    folders = {count: directory / f"uploads-{count}" for count in halves}
    for count, images in halves.items():
        write_corpus(folders[count], images)
    return folders


def write_corpus(folder: Path, corpus: dict[str, bytes]) -> None:
    """An upload corpus ({'uploads/<kind>/<n>.<ext>': bytes}) as files in a new `folder`,
    named '<kind>-<n>.<ext>'."""
    folder.mkdir(parents=True)
    for key, content in corpus.items():
        (folder / "-".join(key.split("/")[1:])).write_bytes(content)


def spark_variant(name: str, spark, config, model_dir: Path, metadata, images, output: Path,
                  partitions: int, rounds: int, reports: list
                  ) -> tuple[float, list[tuple[float, float]]]:
    """Time of a cold run on N, then `rounds` (t(N), t(2N)) of warm runs; the job's run
    reports are appended to `reports`."""
    from pyspark.sql import functions as F

    from imagegraph.infer.job import run_inference
    from imagegraph.storage.selection import PREFIX, InputSource

    def timed(count: int, label: str) -> float:
        directory = images[count]
        out = output / f"{name}-{label}"
        started = time.perf_counter()
        if name.startswith("job"):
            reports.append(run_inference(spark, config,
                                         InputSource(PREFIX, f"file://{directory}"),
                                         f"file://{model_dir}", f"file://{out}"))
        else:
            frame = (spark.read.format("binaryFile").load(f"file://{directory}")
                     .repartition(partitions))
            column = (naive_udf(metadata) if name == "naive_udf"
                      else batch_udf(metadata, config.inference.batch_size))(F.col("content"))
            frame.select("path", column.alias("top_class")).write.parquet(f"file://{out}")
        elapsed = time.perf_counter() - started
        print(f"   {name} {count} images ({label}): {elapsed:.1f} s", flush=True)
        return elapsed

    n = min(images)
    cold = timed(n, "cold")
    return cold, [(timed(n, f"{r}-n"), timed(2 * n, f"{r}-2n")) for r in range(rounds)]


def chunked(config, objects_per_chunk: int, graph_endpoint: str | bool):
    """`config` with runs in chunks of `objects_per_chunk`, writing the graph at
    `graph_endpoint` (False: graph writes off)."""
    graph = replace(config.graph, enabled=bool(graph_endpoint),
                    endpoint=graph_endpoint or config.graph.endpoint)
    return replace(config, graph=graph, run=replace(config.run,
                                                    objects_per_chunk=objects_per_chunk))


def naive_udf(metadata):
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("int")
    def classify(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        import tensorflow as tf

        model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(SIZE, SIZE, 3))
        for contents in batches:
            tops = []
            for data in contents:
                image = Image.open(io.BytesIO(data)).convert("RGB").resize((SIZE, SIZE))
                x = tf.keras.applications.mobilenet_v2.preprocess_input(
                    np.asarray(image, np.float32)[np.newaxis])
                tops.append(int(np.argmax(model(x, training=False)[0])))
            yield pd.Series(tops)

    return classify


def batch_udf(metadata, batch_size: int):
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import IntegerType

    def make_predict_fn():
        import tensorflow as tf

        from imagegraph.imaging.decode import decode_image

        model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(SIZE, SIZE, 3))

        def predict(contents: np.ndarray) -> np.ndarray:
            pixels = np.stack([decode_image(bytes(c), SIZE, SIZE, 3, 10**8, 10**9).pixels
                               for c in contents])
            x = tf.keras.applications.mobilenet_v2.preprocess_input(pixels.astype(np.float32))
            return np.argmax(model.predict(x, verbose=0), axis=1).astype(np.int32)

        return predict

    return predict_batch_udf(make_predict_fn, return_type=IntegerType(), batch_size=batch_size)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024, help="N (default 1024); 2N also run")
    parser.add_argument("--partitions", type=int, default=4,
                        help="input partitions for every Spark variant (default 4)")
    parser.add_argument("--variants", default="decode,decode_uploads,bare_model,bare_model_int8,"
                                               "bare_model_tensorflow,job,job_int8,"
                                               "job_uploads,job_uploads_int8,"
                                               "job_graph_off,job_graph_on,"
                                               "predict_batch_udf,naive_udf",
                        help="comma-separated subset to run (default: all)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of N and 2N per variant after its cold run; the median "
                             "round's rate is reported (default 3)")
    parser.add_argument("--uploads-scale", type=int, default=2,
                        help="decode_uploads' N: the upload corpus at this scale, 13 images "
                             "each (default 2)")
    parser.add_argument("--job-uploads-scale", type=int, default=32,
                        help="job_uploads' N: the upload corpus at this scale (default 32, "
                             "416 images: a Spark run's time varies by seconds, so N must "
                             "take longer than that; making the corpus of 2N takes about 10 "
                             "minutes here)")
    parser.add_argument("--naive-rounds", type=int, default=1,
                        help="rounds for naive_udf, about 7 minutes each here (default 1)")
    args = parser.parse_args()
    n = args.images
    work = Path(tempfile.mkdtemp(prefix="imagegraph-inference-bench-"))
    try:
        images = {n: work / f"images-{n}", 2 * n: work / f"images-{2 * n}"}
        for count, directory in images.items():
            make_jpegs(directory, count)
        model_dir = work / "model"
        metadata = export_mobilenet(model_dir)
        from imagegraph.config import load_config
        from imagegraph.spark_session import get_spark

        base = load_config(str(ROOT / "conf" / "local.yaml"))
        config = replace(base,
                         spark=replace(base.spark, conf={**base.spark.conf,
                                                         "spark.master": "local[2]"}),
                         graph=replace(base.graph, enabled=False),
                         inference=replace(base.inference, partitions=args.partitions))
        int8_config = replace(config, inference=replace(
            config.inference, precision="int8", int8_min_agreement=NO_BOUNDS.min_agreement,
            int8_max_score_delta=NO_BOUNDS.max_score_delta,
            int8_min_embedding_cosine=NO_BOUNDS.min_embedding_cosine,
            int8_calibration_images=INT8_SAMPLE, int8_check_images=INT8_SAMPLE))
        figures: dict = {}
        spark = None
        uploads: dict[int, Path] = {}
        variants = args.variants.split(",")
        gremlin_dir = work / "gremlin"
        if "job_graph_on" in variants:
            gremlin_dir.mkdir()
            graph_endpoint = services.start_gremlin(services.free_port(), gremlin_dir)
        for variant in variants:
            print(f"== {variant}", flush=True)
            rounds = args.naive_rounds if variant == "naive_udf" else args.rounds
            count = n
            if variant == "decode":
                cold, timings = decode_only(images, rounds)
            elif variant == "decode_uploads":
                cold, timings, image_ms = decode_uploads(args.uploads_scale, rounds)
                figures.update(uploads_figures(image_ms))
                count = len(image_ms) // 2
            elif variant.startswith("bare_model"):
                runtime = "tensorflow" if variant == "bare_model_tensorflow" \
                    else config.inference.runtime
                precision = "int8" if variant == "bare_model_int8" else "float32"
                cold, timings = bare_model(model_dir, metadata, images,
                                           config.inference.batch_size, runtime, precision,
                                           rounds)
            else:
                spark = spark or get_spark(config)
                variant_config = int8_config if variant.endswith("_int8") else config
                variant_images = images
                if variant.startswith("job_uploads"):
                    uploads = uploads or write_uploads(work / "uploads",
                                                       args.job_uploads_scale)
                    variant_images, count = uploads, min(uploads)
                    if variant.endswith("_int8"):  # the same sample in the runs of N and 2N
                        variant_config = replace(variant_config, inference=replace(
                            variant_config.inference, int8_calibration_images=count // 4,
                            int8_check_images=count // 4))
                if variant.startswith("job_graph"):
                    variant_config = chunked(config, n // 4, variant == "job_graph_on" and
                                             graph_endpoint)
                reports: list = []
                worker_memory.reset_peaks()
                cold, timings = spark_variant(variant, spark, variant_config, model_dir,
                                              metadata, variant_images, work / "out",
                                              args.partitions, rounds, reports)
                figures[f"{variant}_worker_peak_mib"] = worker_memory.peak_mib()
                if variant.endswith("_int8"):  # the untrained model's agreement: recorded only
                    figures[f"{variant}_precisions"] = sorted({r.precision for r in reports})
                    figures[f"{variant}_agreement_untrained"] = reports[-1].int8_agreement
            for key, value in steady_rates(cold, timings, count).items():
                figures[f"{variant}_{key}"] = value
            print(f"   {variant}: {figures[f'{variant}_img_per_s']} images/s steady "
                  f"(rounds {figures[f'{variant}_rounds_img_per_s']})", flush=True)
        if "decode_uploads_img_per_s" in figures:  # this run's bare models, else the last
            figures.update(uploads_ceilings(os.cpu_count() or 1,
                                            figures["decode_uploads_img_per_s"],
                                            {**read_results(), **figures}))
    finally:
        if gremlin_dir.exists():
            services.stop_one("gremlin", gremlin_dir)
        shutil.rmtree(work, ignore_errors=True)
    merge_results(figures, "inference_machine",
                  f"{os.cpu_count()} cores, Spark local[2], {n} and {2 * n} JPEGs 500x375, "
                  f"MobileNetV2 {SIZE}x{SIZE}, {args.partitions} partitions, upload corpus at "
                  f"scale {args.uploads_scale} (job_uploads: {args.job_uploads_scale}), "
                  f"median of "
                  f"{args.rounds} rounds (naive_udf: {args.naive_rounds})")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
