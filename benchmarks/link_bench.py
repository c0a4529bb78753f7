"""`make bench`, linking part: what the link job's joins cost for N and 2N images, and what the
perceptual hash costs per image.

- near duplicates (`linking.near_duplicates`) and similar images (`linking.similar_images`)
  at the default `link.*` settings, on Spark local[2]: pairs compared (what the buckets put
  side by side) and seconds, for a whole collection of N and of 2N images linked at once, and
  for a batch of B new images linked against N and 2N (what an incremental link run does);
- the baseline for similar images: Spark ML's `BucketedRandomProjectionLSH` (4 tables,
  buckets 0.5 wide, on the unit-length embeddings) with `approxSimilarityJoin` at the same
  distance, on the collection of N;
- the collection: 90% unrelated images (uniformly random 64-bit hashes, random 128-dimension
  embeddings) and 10% near copies of them (a few hash bits flipped, the embedding nudged);
- the hash: `perceptual_hash` on pixels already decoded for a 224x224 RGB model, against what
  `imagehash.phash` would do from the bytes (Pillow decode, grayscale, 32x32 Lanczos resize,
  then the same DCT), per image, on scikit-image's photos.

Results are merged into bench-results.json.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from results import merge_results  # noqa: E402

from imagegraph.config import LinkConfig  # noqa: E402
from imagegraph.imaging.decode import decode_image  # noqa: E402
from imagegraph.imaging.perceptual_hash import perceptual_hash  # noqa: E402
from imagegraph.link.pairs import near_duplicates, similar_images  # noqa: E402

EMBEDDING_SIZE = 128


def collection(count: int, seed: int) -> list[tuple[str, int, list[float]]]:
    """(uri, phash, embedding) rows: 90% unrelated, 10% near copies of earlier ones."""
    rng = np.random.default_rng(seed)
    originals = count * 9 // 10
    hashes = [int(h) for h in rng.integers(-(1 << 63), (1 << 63) - 1, originals,
                                           dtype=np.int64)]
    vectors = rng.standard_normal((originals, EMBEDDING_SIZE))
    rows = [(f"s3://bench/{n:07d}.jpg", hashes[n], vectors[n].tolist())
            for n in range(originals)]
    for n in range(originals, count):
        source = int(rng.integers(originals))
        flips = sum(1 << int(bit) for bit in rng.choice(64, int(rng.integers(0, 7)),
                                                        replace=False))
        flipped = (hashes[source] & ((1 << 64) - 1)) ^ flips
        nudged = vectors[source] + 0.1 * rng.standard_normal(EMBEDDING_SIZE)
        rows.append((f"s3://bench/{n:07d}.jpg",
                     flipped - (1 << 64) if flipped >= 1 << 63 else flipped, nudged.tolist()))
    return rows


def link_cost(spark, rows: list, new_count: int | None, link: LinkConfig) -> dict:
    """Pairs compared, pairs found and seconds of both joins, for the last `new_count` rows
    (None: all) as new against all."""
    every = spark.createDataFrame(rows, "uri string, phash long, embedding array<float>")
    every = every.repartition(4).cache()
    every.count()
    new = every if new_count is None else every.where(
        every.uri >= rows[len(rows) - new_count][0]).cache()
    new_images = new.count()
    figures = {"images": len(rows), "new_images": new_images,
               "all_pairs": new_images * len(rows)}
    started = time.monotonic()
    near = near_duplicates(new, every, link.near_duplicate_bands, link.near_duplicate_band_radius,
                           link.near_duplicate_max_distance)
    figures.update(near_duplicate_pairs_compared=near.pairs_compared,
                   near_duplicates_found=near.found.count(),
                   near_duplicate_s=round(time.monotonic() - started, 1))
    started = time.monotonic()
    similar = similar_images(new, every, link.similar_k, link.similar_max_distance,
                             link.similar_bands, link.similar_band_radius, link.seed)
    figures.update(similar_pairs_compared=similar.pairs_compared,
                   similar_found=similar.found.count(),
                   similar_s=round(time.monotonic() - started, 1))
    every.unpersist()
    return figures


def projection_baseline(spark, rows: list, link: LinkConfig) -> dict:
    """Spark ML's BucketedRandomProjectionLSH on the same embeddings: pairs its buckets put
    side by side, pairs found within the distance, seconds."""
    from pyspark.ml.feature import BucketedRandomProjectionLSH, Normalizer
    from pyspark.ml.functions import array_to_vector, vector_to_array
    from pyspark.sql import functions as F

    vectors = spark.createDataFrame([(uri, embedding) for uri, _, embedding in rows],
                                    "uri string, embedding array<float>")
    units = Normalizer(inputCol="vector", outputCol="unit").transform(
        vectors.select("uri", array_to_vector("embedding").alias("vector"))).cache()
    started = time.monotonic()
    model = BucketedRandomProjectionLSH(inputCol="unit", outputCol="hashes", bucketLength=0.5,
                                        numHashTables=4, seed=link.seed).fit(units)
    hashed = model.transform(units).cache()
    found = (model.approxSimilarityJoin(hashed, hashed, link.similar_max_distance)
             .where(F.col("datasetA.uri") < F.col("datasetB.uri")).count())
    buckets = (hashed.select("uri", F.posexplode("hashes").alias("table", "h"))
               .select("table", vector_to_array("h")[0].alias("bucket"))
               .groupBy("table", "bucket").count())
    compared = buckets.agg(F.sum(F.col("count") * F.col("count"))).first()[0] - 4 * len(rows)
    return {"images": len(rows), "all_pairs": len(rows) ** 2, "pairs_compared": int(compared),
            "found": found, "seconds": round(time.monotonic() - started, 1)}


def hash_cost(repeats: int) -> dict:
    """Microseconds per image: the hash on decoded pixels, and imagehash's route from bytes."""
    import skimage.data

    photos = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).save(buffer, format="JPEG", quality=90)
        photos.append(buffer.getvalue())
    decoded = [decode_image(data, 224, 224, 3, 10**8, 10**9).pixels for data in photos]

    def from_bytes(data: bytes) -> np.ndarray:
        small = Image.open(io.BytesIO(data)).convert("L").resize((32, 32),
                                                                Image.Resampling.LANCZOS)
        low = cv2.dct(np.asarray(small, dtype=np.float32))[:8, :8]
        return low > np.median(low)

    timings = {}
    for name, work in (("on_decoded_pixels_us", lambda: [perceptual_hash(p) for p in decoded]),
                       ("from_bytes_like_imagehash_us", lambda: [from_bytes(d) for d in photos])):
        started = time.perf_counter()
        for _ in range(repeats):
            work()
        timings[name] = round((time.perf_counter() - started) / (repeats * len(photos)) * 1e6, 1)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4000, help="N (default 4000)")
    parser.add_argument("--batch", type=int, default=400,
                        help="B, new images of an incremental run (default 400)")
    args = parser.parse_args()

    from pyspark.sql import SparkSession
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the signatures' pandas UDF
    spark = (SparkSession.builder.master("local[2]").appName("link_bench")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "8")
             .config("spark.driver.memory", "2g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    link = LinkConfig()
    figures = {}
    for label, count in (("n", args.images), ("2n", 2 * args.images)):
        rows = collection(count, seed=count)
        figures[f"link_all_{label}"] = link_cost(spark, rows, None, link)
        figures[f"link_batch_{label}"] = link_cost(spark, rows, args.batch, link)
        print(label, figures[f"link_all_{label}"], figures[f"link_batch_{label}"], flush=True)
        if label == "n":
            figures["link_similar_projection_baseline_n"] = projection_baseline(spark, rows, link)
            print(figures["link_similar_projection_baseline_n"], flush=True)
    spark.stop()
    figures["perceptual_hash"] = hash_cost(repeats=50)
    print(figures["perceptual_hash"])
    merge_results(figures, "link_machine",
                  f"{platform.node()}: {platform.processor() or platform.machine()}, Spark "
                  f"local[2], link.* defaults, python benchmarks/link_bench.py "
                  f"--images {args.images} --batch {args.batch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
