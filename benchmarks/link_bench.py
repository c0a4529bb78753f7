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
  embeddings) and 10% near copies of them (a few hash bits flipped, the embedding nudged by
  noise of 0.05 to 1 a dimension: 0.05 to about 0.77 away once unit length);
- the similar join's recall against exact search: each new image's k nearest within the
  distance by brute force (numpy), and the share of those pairs the join found, by distance;
- what linking 1 million new images against 100 million would take on 16 nodes: the similar
  join's seconds for B new images against N, 4N and 16N (the slope: seconds per image linked
  against), per new image (all of 2N at once less B new against 2N, over the extra new
  images), seconds per band match (the whole 2N collection with
  4 bands of 16 bits within 2 bits, the former defaults, against the defaults), and the band
  matches per new image that 100 million unrelated images make at the defaults;
  `--similar-only` measures that alone (the join timed as the link job runs it: every
  image's signature staged once to Parquet, then read by each of the join's actions);
- the same projection for the near-duplicate join at its defaults (`near_duplicate_costs`):
  seconds per image linked against, per probe row (each new image's bands x the values within
  the radius) and per band match, and the probe rows and band matches a new image makes at
  100 million; `--near-duplicates-only` measures that alone (a few minutes);
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
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from results import merge_results  # noqa: E402

from imagegraph.config import LinkConfig  # noqa: E402
from imagegraph.imaging.decode import decode_image  # noqa: E402
from imagegraph.imaging.perceptual_hash import HASH_BITS, perceptual_hash  # noqa: E402
from imagegraph.link.pairs import (  # noqa: E402
    Pairs,
    band_matches_per_image,
    flip_masks,
    near_duplicates,
    signed_embeddings,
    similar_images,
)

EMBEDDING_SIZE = 128
RECALL_BINS = ((0.0, 0.3), (0.3, 0.5), (0.5, 0.8))
"""Distances (low, high] over which the similar join's recall is also given."""
PROJECTED = {"existing_images": 100_000_000, "new_images": 1_000_000, "nodes": 16,
             "vcpus_per_node": 8, "local_cores": 2}
"""The projection's collection, and the cluster: 16 m6i.2xlarge core nodes (emr/launcher.yaml);
the figures are measured on Spark local[2]."""


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
        nudged = vectors[source] + rng.uniform(0.05, 1.0) * rng.standard_normal(EMBEDDING_SIZE)
        rows.append((f"s3://bench/{n:07d}.jpg",
                     flipped - (1 << 64) if flipped >= 1 << 63 else flipped, nudged.tolist()))
    return rows


def cached_images(spark, rows: list, new_count: int | None) -> tuple:
    """(all `rows` as a cached DataFrame, the last `new_count` of them (None: all) cached, how
    many those are, the least uri of those: the rows are in uri order)."""
    every = spark.createDataFrame(rows, "uri string, phash long, embedding array<float>")
    every = every.repartition(4).cache()
    every.count()
    first_new = rows[len(rows) - (new_count or len(rows))][0]
    new = every if new_count is None else every.where(every.uri >= first_new).cache()
    return every, new, new.count(), first_new


@contextmanager
def staged_similar(spark, every, first_new: str, link: LinkConfig) -> Iterator[Pairs]:
    """`similar_images` of the images of `every` from uri `first_new` on against all of them,
    as the link job runs it: every image's signature written once to Parquet (in a temporary
    directory, removed on leaving) and read back by the join's actions."""
    with tempfile.TemporaryDirectory(prefix="link-bench-") as directory:
        signed_embeddings(every.select("uri", "embedding"), link.seed, link.similar_bands,
                          link.similar_band_bits).write.parquet(f"{directory}/signed")
        signed = spark.read.parquet(f"{directory}/signed")
        yield similar_images(signed.where(signed.uri >= first_new), signed,
                             link.similar_k, link.similar_max_distance, link.similar_band_bits,
                             link.similar_band_radius)


def link_cost(spark, rows: list, new_count: int | None, link: LinkConfig) -> dict:
    """Pairs compared, pairs found and seconds of both joins, for the last `new_count` rows
    (None: all) as new against all."""
    every, new, new_images, first_new = cached_images(spark, rows, new_count)
    figures = {"images": len(rows), "new_images": new_images,
               "all_pairs": new_images * len(rows)}
    started = time.monotonic()
    near = near_duplicates(new, every, link.near_duplicate_bands, link.near_duplicate_band_radius,
                           link.near_duplicate_max_distance)
    figures.update(near_duplicate_pairs_compared=near.pairs_compared,
                   near_duplicates_found=near.found.count(),
                   near_duplicate_s=round(time.monotonic() - started, 1))
    started = time.monotonic()
    with staged_similar(spark, every, first_new, link) as similar:
        found = {(row.uri, row.other) for row in similar.found.collect()}
    figures.update(similar_pairs_compared=similar.pairs_compared, similar_found=len(found),
                   similar_s=round(time.monotonic() - started, 1))
    new_uris = {row.uri for row in new.select("uri").collect()}
    figures.update(similar_recall(rows, new_uris, found, link))
    every.unpersist()
    return figures


def exact_nearest(rows: list, new_uris: set, link: LinkConfig) -> dict:
    """Brute force: each new image's `link.similar_k` nearest images within
    `link.similar_max_distance` (unit-length Euclidean), as {(lesser uri, greater): distance}."""
    uris = [uri for uri, _, _ in rows]
    vectors = np.array([embedding for _, _, embedding in rows], dtype=np.float64)
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    pairs = {}
    for n in (n for n, uri in enumerate(uris) if uri in new_uris):
        distances = np.linalg.norm(units - units[n], axis=1)
        distances[n] = np.inf
        for other in np.lexsort((uris, distances))[:link.similar_k]:
            if distances[other] <= link.similar_max_distance:
                pairs[tuple(sorted((uris[n], uris[other])))] = float(distances[other])
    return pairs


def similar_recall(rows: list, new_uris: set, found: set, link: LinkConfig) -> dict:
    """The share of the exact nearest pairs of the new images that the join found, overall
    and by distance (`RECALL_BINS`), with how many exact pairs each share is of."""
    exact = exact_nearest(rows, new_uris, link)
    figures = {"similar_exact_pairs": len(exact),
               "similar_recall": round(len(found & exact.keys()) / max(1, len(exact)), 4)}
    for low, high in RECALL_BINS:
        within = {pair for pair, distance in exact.items() if low < distance <= high}
        figures[f"similar_recall_{low}_{high}"] = (
            round(len(found & within) / len(within), 4) if within else None)
        figures[f"similar_exact_pairs_{low}_{high}"] = len(within)
    return figures


def similar_seconds(spark, rows: list, new_count: int | None, link: LinkConfig) -> dict:
    """The similar join alone for the last `new_count` rows (None: all) against all: band
    matches, band matches per new image, seconds."""
    every, _, new_images, first_new = cached_images(spark, rows, new_count)
    started = time.monotonic()
    with staged_similar(spark, every, first_new, link) as similar:
        found = similar.found.count()
    seconds = time.monotonic() - started
    every.unpersist()
    return {"images": len(rows), "new_images": new_images,
            "pairs_compared": similar.pairs_compared,
            "pairs_compared_per_new_image": round(similar.pairs_compared / new_images, 2),
            "found": found, "seconds": round(seconds, 1)}


def similar_scaling(spark, images: int, batch: int, link: LinkConfig) -> dict:
    """The similar join for `batch` new images against N, 4N and 16N images; the least-squares
    line through its seconds: seconds per image linked against (the slope)."""
    runs = [similar_seconds(spark, collection(size, seed=size), batch, link)
            for size in (images, 4 * images, 16 * images)]
    slope, _ = np.polyfit([run["images"] for run in runs], [run["seconds"] for run in runs], 1)
    return {"runs": runs, "s_per_existing_image": float(f"{slope:.3g}")}


def new_image_cost(whole_s: float, whole_new: int, batch_s: float, batch_new: int) -> float:
    """Seconds per new image: the seconds of the whole collection linked at once (`whole_new`
    new images) less those of a batch of it linked against it (`batch_new`), over the extra
    new images."""
    return float(f"{(whole_s - batch_s) / (whole_new - batch_new):.3g}")


def pair_cost(spark, images: int, link: LinkConfig) -> dict:
    """Seconds per band match: the whole collection of `images` linked at once at the defaults
    and with 4 bands of 16 bits within 2 bits (the former defaults: about 4 x 137 / 65,536 of
    all pairs meet); the extra seconds over the extra band matches."""
    rows = collection(images, seed=images)
    wide = LinkConfig(similar_bands=4, similar_band_bits=16, similar_band_radius=2)
    runs = {"defaults": similar_seconds(spark, rows, None, link),
            "4_bands_16_bits_radius_2": similar_seconds(spark, rows, None, wide)}
    extra = [runs["4_bands_16_bits_radius_2"][key] - runs["defaults"][key]
             for key in ("seconds", "pairs_compared")]
    return {"runs": runs, "s_per_pair_compared": float(f"{extra[0] / extra[1]:.3g}")}


def projection(s_per_existing_image: float, s_per_new_image: float,
               s_per_pair_compared: float, link: LinkConfig) -> dict:
    """Hours for the similar join to link `PROJECTED["new_images"]` against
    `PROJECTED["existing_images"]` on `PROJECTED["nodes"]` nodes: the local seconds times
    `local_cores` (core-seconds), over the nodes' vCPUs:
    (existing x s_per_existing_image + new x s_per_new_image + new x matches x
    s_per_pair_compared) x local_cores / (nodes x vcpus_per_node), matches the band matches a
    new image makes with the existing images (`band_matches_per_image`, unrelated images)."""
    existing, new = PROJECTED["existing_images"], PROJECTED["new_images"]
    matches = existing * band_matches_per_image(link.similar_bands, link.similar_band_bits,
                                                link.similar_band_radius)
    terms = {"existing_s": existing * s_per_existing_image, "new_s": new * s_per_new_image,
             "pairs_s": new * matches * s_per_pair_compared}
    hours = cluster_hours(sum(terms.values()))
    return {**PROJECTED, "s_per_existing_image": s_per_existing_image,
            "s_per_new_image": s_per_new_image, "s_per_pair_compared": s_per_pair_compared,
            "pairs_compared_per_new_image": round(matches),
            **{key: float(f"{value:.3g}") for key, value in terms.items()},
            "hours": round(hours, 2)}


def cluster_hours(local_seconds: float) -> float:
    """Hours on `PROJECTED["nodes"]` nodes for `local_seconds` on Spark local[`local_cores`]:
    local_seconds x local_cores / (nodes x vcpus_per_node) / 3,600, rounded to 0.01 hour."""
    cores = PROJECTED["nodes"] * PROJECTED["vcpus_per_node"]
    return round(local_seconds * PROJECTED["local_cores"] / cores / 3600, 2)


def near_duplicate_seconds(spark, rows: list, new_count: int | None,
                           link: LinkConfig) -> dict:
    """The near-duplicate join alone for the last `new_count` rows (None: all) against all:
    probe rows (each new image's bands x the values within the radius), band matches, pairs
    found, seconds."""
    every, new, new_images, _ = cached_images(spark, rows, new_count)
    started = time.monotonic()
    near = near_duplicates(new, every, link.near_duplicate_bands,
                           link.near_duplicate_band_radius, link.near_duplicate_max_distance)
    found = near.found.count()
    seconds = time.monotonic() - started
    every.unpersist()
    return {"images": len(rows), "new_images": new_images,
            "probes": new_images * probes_per_image(link),
            "pairs_compared": near.pairs_compared, "found": found,
            "seconds": round(seconds, 1)}


def probes_per_image(link: LinkConfig) -> int:
    """Probe rows of a new image in the near-duplicate join: bands x the values within the
    radius of a band."""
    bits = HASH_BITS // link.near_duplicate_bands
    return link.near_duplicate_bands * len(flip_masks(bits, link.near_duplicate_band_radius))


FORMER_NEAR_DUPLICATE_SETTINGS = {"near_duplicate_bands": 4, "near_duplicate_band_radius": 3,
                                  "near_duplicate_max_distance": 12}
"""4 bands of 16 bits within 3, the former defaults: 2,788 probe rows a new image, and 4.25% of
unrelated pairs matched (the defaults: 2.6e-6)."""
FEWER_PROBES_SETTINGS = {"near_duplicate_bands": 2, "near_duplicate_band_radius": 2,
                         "near_duplicate_max_distance": 5}
"""2 bands within 2: a tenth of the defaults' probe rows, and as few matches."""


def near_duplicate_costs(spark, images: int, batch: int, link: LinkConfig) -> dict:
    """The near-duplicate join's costs, in local seconds. `batch` new images against N, 4N and
    16N images at `link` (N = `images`): the least-squares slope of their seconds per image
    linked against, which the load's noise swamps (the probe rows stay, the band matches are
    nearly none). So per image linked against and per band match, upper bounds: `batch` new
    against 16N with `FORMER_NEAR_DUPLICATE_SETTINGS` (4.25% of all pairs matched, twice the
    defaults' band rows an image), the run's seconds over its images linked against and over
    its matches, all of its cost charged to each. Per probe row: the whole collection of N
    linked at once at `link` and with `FEWER_PROBES_SETTINGS`, the extra seconds over the extra
    probe rows. A first run of `batch` against N, not counted, warms the session up (it took
    twice the next ones)."""
    near_duplicate_seconds(spark, collection(images, seed=images), batch, link)
    line = [near_duplicate_seconds(spark, collection(size, seed=size), batch, link)
            for size in (images, 4 * images, 16 * images)]
    slope, _ = np.polyfit([run["images"] for run in line], [run["seconds"] for run in line], 1)
    many = near_duplicate_seconds(spark, collection(16 * images, seed=16 * images), batch,
                                  replace(link, **FORMER_NEAR_DUPLICATE_SETTINGS))
    rows = collection(images, seed=images)
    whole = {"defaults": near_duplicate_seconds(spark, rows, None, link),
             "fewer_probes": near_duplicate_seconds(spark, rows, None,
                                                    replace(link, **FEWER_PROBES_SETTINGS))}
    s_probe = ((whole["defaults"]["seconds"] - whole["fewer_probes"]["seconds"])
               / (whole["defaults"]["probes"] - whole["fewer_probes"]["probes"]))
    return {"scaling_runs": line, "s_per_existing_image_slope": float(f"{slope:.3g}"),
            "former_settings_run": many, "whole_collection": whole,
            "s_per_existing_image": float(f"{many['seconds'] / many['images']:.3g}"),
            "s_per_probe": float(f"{s_probe:.3g}"),
            "s_per_pair_compared": float(f"{many['seconds'] / many['pairs_compared']:.3g}")}


def near_duplicate_projection(costs: dict, link: LinkConfig) -> dict:
    """Hours for the near-duplicate join to link `PROJECTED["new_images"]` against
    `PROJECTED["existing_images"]` on `PROJECTED["nodes"]` nodes (`cluster_hours`):
    existing x s_per_existing_image + new x probes x s_per_probe + new x matches x
    s_per_pair_compared, probes a new image's probe rows (`probes_per_image`), matches the band
    matches it makes with the existing images (`band_matches_per_image`, unrelated hashes,
    bits even)."""
    existing, new = PROJECTED["existing_images"], PROJECTED["new_images"]
    bits = HASH_BITS // link.near_duplicate_bands
    probes = probes_per_image(link)
    matches = existing * band_matches_per_image(link.near_duplicate_bands, bits,
                                                link.near_duplicate_band_radius)
    terms = {"existing_s": existing * costs["s_per_existing_image"],
             "probes_s": new * probes * costs["s_per_probe"],
             "pairs_s": new * matches * costs["s_per_pair_compared"]}
    return {**PROJECTED, **{key: costs[key] for key in ("s_per_existing_image", "s_per_probe",
                                                        "s_per_pair_compared")},
            "probes_per_new_image": probes, "pairs_compared_per_new_image": round(matches),
            **{key: float(f"{value:.3g}") for key, value in terms.items()},
            "hours": cluster_hours(sum(terms.values()))}


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
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--near-duplicates-only", action="store_true",
                      help="only the near-duplicate join's costs and projection")
    only.add_argument("--similar-only", action="store_true",
                      help="only the similar join's costs and projection (the whole 2N at "
                           "once and a batch of it timed by the similar join alone)")
    args = parser.parse_args()

    from pyspark.sql import SparkSession
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the signatures' pandas UDF
    spark = (SparkSession.builder.master("local[2]").appName("link_bench")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "8")
             .config("spark.driver.memory", "2g").config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    link = LinkConfig()
    figures = {} if args.similar_only else near_duplicate_figures(spark, args, link)
    if args.near_duplicates_only:
        spark.stop()
        merge_results(figures, "link_near_duplicate_machine", machine(args))
        return 0
    if args.similar_only:
        rows = collection(2 * args.images, seed=2 * args.images)
        runs = {"all": similar_seconds(spark, rows, None, link),
                "batch": similar_seconds(spark, rows, args.batch, link)}
        figures["link_similar_new_image_runs"] = runs
        print(runs, flush=True)
        whole, batch = runs["all"], runs["batch"]
        s_per_new_image = new_image_cost(whole["seconds"], whole["new_images"],
                                         batch["seconds"], batch["new_images"])
    else:
        figures.update(link_figures(spark, args, link))
        whole, batch = figures["link_all_2n"], figures["link_batch_2n"]
        s_per_new_image = new_image_cost(whole["similar_s"], whole["new_images"],
                                         batch["similar_s"], batch["new_images"])
    figures["link_similar_scaling"] = similar_scaling(spark, args.images, args.batch, link)
    print(figures["link_similar_scaling"], flush=True)
    figures["link_similar_pair_cost"] = pair_cost(spark, 2 * args.images, link)
    print(figures["link_similar_pair_cost"], flush=True)
    figures["link_similar_projection"] = projection(
        figures["link_similar_scaling"]["s_per_existing_image"], s_per_new_image,
        figures["link_similar_pair_cost"]["s_per_pair_compared"], link)
    print(figures["link_similar_projection"], flush=True)
    spark.stop()
    if args.similar_only:
        merge_results(figures, "link_similar_machine", machine(args))
        return 0
    figures["perceptual_hash"] = hash_cost(repeats=50)
    print(figures["perceptual_hash"])
    merge_results(figures, "link_machine", machine(args))
    return 0


def near_duplicate_figures(spark, args: argparse.Namespace, link: LinkConfig) -> dict:
    """The near-duplicate join's costs (`near_duplicate_costs`) and projection."""
    figures = {"link_near_duplicate_costs": near_duplicate_costs(spark, args.images, args.batch,
                                                                 link)}
    print(figures["link_near_duplicate_costs"], flush=True)
    figures["link_near_duplicate_projection"] = near_duplicate_projection(
        figures["link_near_duplicate_costs"], link)
    print(figures["link_near_duplicate_projection"], flush=True)
    return figures


def link_figures(spark, args: argparse.Namespace, link: LinkConfig) -> dict:
    """Both joins (`link_cost`) on the whole collection of N and of 2N at once and on a batch
    of each; Spark ML's baseline on N."""
    figures = {}
    for label, count in (("n", args.images), ("2n", 2 * args.images)):
        rows = collection(count, seed=count)
        figures[f"link_all_{label}"] = link_cost(spark, rows, None, link)
        figures[f"link_batch_{label}"] = link_cost(spark, rows, args.batch, link)
        print(label, figures[f"link_all_{label}"], figures[f"link_batch_{label}"], flush=True)
        if label == "n":
            figures["link_similar_projection_baseline_n"] = projection_baseline(spark, rows, link)
            print(figures["link_similar_projection_baseline_n"], flush=True)
    return figures


def machine(args: argparse.Namespace) -> str:
    """The machine, Spark and command a run's figures are of, with the load average."""
    only = (" --near-duplicates-only" if args.near_duplicates_only else
            " --similar-only" if args.similar_only else "")
    return (f"{platform.node()}: {platform.processor() or platform.machine()}, Spark local[2], "
            f"link.* defaults, python benchmarks/link_bench.py --images {args.images} "
            f"--batch {args.batch}{only}, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    sys.exit(main())
