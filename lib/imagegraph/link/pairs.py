"""Finding the pairs of images the link job connects, as Spark transformations of prediction
rows (uri, sha256, phash, embedding): new images against every image (new ones included), so a
run links what it adds without comparing the old images among themselves again.

- exact duplicates need no join: every image points to the content vertex of its sha256;
- near duplicates: perceptual hashes (64 bits) cut into equal bands of bits; a new image is
  compared with an image only when one of their bands differs in at most `band_radius` bits
  (an equi-join on (band, bits) of every image's bands with each new image's bands and all
  their variants within that radius; only uris and band bits go through it), then the pair
  is kept when the whole hashes are within the distance. With `bands` x (`band_radius` + 1)
  > the distance no pair within it is missed (one band must then differ in at most
  `band_radius` bits);
- similar images: the same banded join on random-hyperplane bands of the embeddings
  (SimHash: a bit per hyperplane, `bands` tables of `band_bits` bits), then the Euclidean
  distance of the unit-length embeddings; each new image's k nearest within the distance
  kept. Wide bands keep the buckets small as the collection grows (an unrelated image meets
  a new one with probability bands x (variants of a band within the radius) / 2^band_bits);
  no distance is guaranteed, the recall against exact search is measured (`make bench`).
  (Spark ML's BucketedRandomProjectionLSH hashes one projection per table: on 128-dimension
  embeddings its buckets held more pairs than all pairs; `make bench` measures both.)

Each also says how many band matches its join made (`pairs_compared`: what the join costs; a
pair matching in several bands counts once per band), against n_new * n_all for all pairs.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

from imagegraph.imaging.perceptual_hash import HASH_BITS

PAIR_COLUMNS = ("uri", "other", "distance")
"""A found pair: a new image, the image it was found near, and their distance."""


@dataclass(frozen=True)
class Pairs:
    """The pairs found (a DataFrame of `PAIR_COLUMNS`, each unordered pair once, `uri` the
    lesser) and the pairs the buckets put side by side to find them (an int)."""

    found: DataFrame
    pairs_compared: int


def latest_rows(predictions: DataFrame) -> DataFrame:
    """One row per `uri`: the one of the latest run (run ids sort by start time)."""
    latest = Window.partitionBy("uri").orderBy(F.col("run_id").desc())
    return (predictions.withColumn("_rank", F.row_number().over(latest))
            .where(F.col("_rank") == 1).drop("_rank"))


def hash_bands(phash: Column, bands: int) -> Column:
    """An array of longs: the 64-bit `phash` cut into `bands` equal slices of bits, the lowest
    bits first."""
    width = HASH_BITS // bands
    mask = (1 << width) - 1
    return F.array(*(F.shiftrightunsigned(phash, band * width)
                     .bitwiseAND(F.lit(mask).cast("long")) for band in range(bands)))


def flip_masks(width: int, radius: int) -> list[int]:
    """Every `width`-bit mask with at most `radius` bits set, 0 first: XORed with a band's
    bits they give each variant within `radius` bits of it."""
    return [sum(1 << bit for bit in bits) for flipped in range(radius + 1)
            for bits in itertools.combinations(range(width), flipped)]


def band_matches_per_image(bands: int, band_bits: int, band_radius: int) -> float:
    """The band matches the join makes, on average, between a new image and one unrelated
    image (bits independent and even): `bands` x the values within `band_radius` bits of a
    band / 2^`band_bits`; times the images linked against, the unrelated matches of each new
    image."""
    return bands * len(flip_masks(band_bits, band_radius)) / 2**band_bits


def near_duplicates(new: DataFrame, every: DataFrame, bands: int, band_radius: int,
                    max_distance: int) -> Pairs:
    """Pairs of a `new` image and any image of `every` (both with uri and phash; `every`
    holds the new ones too) of which a band differs in at most `band_radius` bits and the
    whole hashes in at most `max_distance` bits."""
    def banded(frame: DataFrame) -> DataFrame:
        return (frame.where(F.col("phash").isNotNull())
                .select("uri", hash_bands(F.col("phash"), bands).alias("bands")))

    pairs, compared = _banded_pairs(banded(new), banded(every), HASH_BITS // bands,
                                    band_radius)
    found = (_with_payloads(pairs, new, every, "phash")
             .withColumn("distance", F.bit_count(F.col("phash").bitwiseXOR(F.col("other_phash")))
                         .cast("int"))
             .where(F.col("distance") <= max_distance))
    return Pairs(_unordered(found), compared)


def signed_embeddings(frame: DataFrame, seed: int, bands: int, band_bits: int) -> DataFrame:
    """The rows of `frame` (uri, embedding, any other columns) that have an embedding, the
    embedding replaced by its `embedding_bands`: `bands` (an array of longs) and `unit`
    (floats). What `similar_images` compares; the link job stages it once per run, since the
    join reads it in several actions."""
    kept = [column for column in frame.columns if column != "embedding"]
    return (frame.where(F.size("embedding") > 0)
            .withColumn("_s", embedding_bands(F.col("embedding"), seed, bands, band_bits))
            .select(*kept, "_s.bands", "_s.unit"))


def similar_images(new: DataFrame, every: DataFrame, k: int, max_distance: float,
                   band_bits: int, band_radius: int) -> Pairs:
    """Each `new` image's `k` nearest images of `every` (both `signed_embeddings`: uri, bands,
    unit; `every` holds the new ones too) within `max_distance`, by the Euclidean distance of
    the unit-length embeddings. Pairs are compared when one of their random-hyperplane bands
    of `band_bits` bits (a bit per hyperplane: which side of it the embedding lies) differs in
    at most `band_radius` bits: two embeddings at angle t differ in a bit with probability
    t/pi."""
    pairs, compared = _banded_pairs(new, every, band_bits, band_radius)
    candidates = _with_payloads(pairs, new, every, "unit")
    squares = F.zip_with("unit", "other_unit", lambda a, b: (a - b) * (a - b))
    distance = F.sqrt(F.aggregate(squares, F.lit(0.0), lambda total, x: total + x))
    nearest = Window.partitionBy("uri").orderBy("distance", "other")
    found = (candidates.withColumn("distance", distance)
             .where(F.col("distance") <= max_distance)
             .withColumn("_rank", F.row_number().over(nearest))
             .where(F.col("_rank") <= k))
    return Pairs(_unordered(found), compared)


def embedding_bands(embedding: Column, seed: int, bands: int, band_bits: int) -> Column:
    """A struct of the embedding's `hyperplane_bands` (`bands`, an array of longs) and the
    embedding scaled to unit length (`unit`, floats; an all-zero embedding stays zero)."""

    @pandas_udf("bands array<long>, unit array<float>")
    def sign(embeddings: pd.Series) -> pd.DataFrame:
        if embeddings.empty:
            return pd.DataFrame({"bands": pd.Series(dtype="object"),
                                 "unit": pd.Series(dtype="object")})
        values, units = hyperplane_bands(np.stack(embeddings.to_numpy()), seed, bands,
                                         band_bits)
        return pd.DataFrame({"bands": list(values), "unit": list(units)})

    return sign(embedding)


def hyperplane_bands(vectors: np.ndarray, seed: int, bands: int,
                     band_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The random-hyperplane bands of `vectors` (n, features): int64 (n, `bands`), band b's
    bits the sides of hyperplanes b x `band_bits` onwards (the first the highest bit; a bit
    set when the vector is on the positive side of the hyperplane through the origin, the
    hyperplanes drawn from a normal distribution seeded by `seed`, the same first ones
    whatever their number); and the vectors scaled to unit length, float32 (n, features).
    Vectors all on one side of the origin (post-ReLU embeddings not centred) share most bits
    whatever they show."""
    vectors = vectors.astype(np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    units = vectors / np.where(norms == 0, 1.0, norms)
    planes = np.random.default_rng(seed).standard_normal((bands * band_bits, vectors.shape[1]))
    sides = (units @ planes.T > 0).reshape(len(vectors), bands, band_bits).astype(np.int64)
    weights = np.left_shift(1, np.arange(band_bits - 1, -1, -1, dtype=np.int64))
    return sides @ weights, units.astype(np.float32)


def _banded_pairs(new: DataFrame, every: DataFrame, band_bits: int,
                  band_radius: int) -> tuple[DataFrame, int]:
    """Each distinct (uri, other) of a `new` row and another row of `every` (both with uri and
    bands, an array of longs of `band_bits` bits; `every` holds each new uri once) of which a
    band (the same position) differs in at most `band_radius` bits; and how many (probe, row)
    pairs the equi-join on (band, bits) made. Only uris and band bits go through the join
    (what is compared joins the distinct pairs afterwards), and it is a sort-merge join
    (hinted): on sizes that looked small Spark's adaptive execution broadcast a side of it, a
    hash table built in the driver's memory, which the probes (each new image's bands x the
    values within the radius) outgrow."""
    def banded(frame: DataFrame) -> DataFrame:
        return frame.select("uri", F.posexplode("bands").alias("band", "bits"))

    masks = F.array(*(F.lit(mask).cast("long") for mask in flip_masks(band_bits, band_radius)))
    probes = (banded(new).select("uri", "band", "bits", F.explode(masks).alias("mask"))
              .select("uri", "band", F.col("bits").bitwiseXOR(F.col("mask")).alias("bits")))
    rows = banded(every)
    pairs = (probes.alias("l").join(rows.alias("r").hint("merge"), ["band", "bits"])
             .where(F.col("l.uri") != F.col("r.uri"))
             .select("l.uri", F.col("r.uri").alias("other"))
             .distinct())
    return pairs, _bucket_pairs(new, probes, rows, ["band", "bits"])


def _with_payloads(pairs: DataFrame, new: DataFrame, every: DataFrame,
                   payload: str) -> DataFrame:
    """`pairs` (uri, other) with column `payload` of `new` for uri and of `every` for other
    (as `other_<payload>`); both frames with uri and `payload`."""
    return (pairs.join(new.select("uri", payload), "uri")
            .join(every.select(F.col("uri").alias("other"),
                               F.col(payload).alias(f"other_{payload}")), "other"))


def _unordered(pairs: DataFrame) -> DataFrame:
    """(uri, other, distance) with `uri` the lesser of each pair, each pair once."""
    return (pairs.select(F.least("uri", "other").alias("uri"),
                         F.greatest("uri", "other").alias("other"), "distance")
            .dropDuplicates(["uri", "other"]))


def _bucket_pairs(new: DataFrame, probes: DataFrame, rows: DataFrame, keys: list[str]) -> int:
    """How many (probe, row) pairs with different uris the equi-join on `keys` makes: per
    bucket, probes x rows, less each new image's probes that meet its own row (one a band: the
    probe that flips no bit; `rows` hold every `new` image once)."""
    per_bucket = (probes.groupBy(keys).count().withColumnRenamed("count", "n_left")
                  .join(rows.groupBy(keys).count().withColumnRenamed("count", "n_right"), keys))
    meetings = per_bucket.agg(F.sum(F.col("n_left") * F.col("n_right"))).first()[0] or 0
    selves = new.agg(F.sum(F.size("bands"))).first()[0] or 0
    return int(meetings - selves)
