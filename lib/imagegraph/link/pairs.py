"""Finding the pairs of images the link job connects, as Spark transformations of prediction
rows (uri, sha256, phash, embedding): new images against every image (new ones included), so a
run links what it adds without comparing the old images among themselves again.

- exact duplicates need no join: every image points to the content vertex of its sha256;
- near duplicates: perceptual hashes (64 bits) cut into equal bands of bits; a new image is
  compared with an image only when one of their bands differs in at most `band_radius` bits
  (an equi-join on (band, bits) of every image's bands with each new image's bands and all
  their variants within that radius), then the pair is kept when the whole hashes are within
  the distance. With `bands` x (`band_radius` + 1) > the distance no pair within it is missed
  (one band must then differ in at most `band_radius` bits);
- similar images: the same banded join on 64-bit random-hyperplane signatures of the
  embeddings (SimHash), then the Euclidean distance of the unit-length embeddings; each new
  image's k nearest within the distance kept. (Spark ML's BucketedRandomProjectionLSH hashes
  one projection per table: on 128-dimension embeddings its buckets held more pairs than all
  pairs; `make bench` measures both.)

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
    """An array of (band, bits) structs: the 64-bit `phash` cut into `bands` equal slices."""
    width = HASH_BITS // bands
    mask = (1 << width) - 1
    return F.array(*(F.struct(F.lit(band).alias("band"),
                              F.shiftrightunsigned(phash, band * width)
                              .bitwiseAND(F.lit(mask).cast("long")).alias("bits"))
                     for band in range(bands)))


def flip_masks(width: int, radius: int) -> list[int]:
    """Every `width`-bit mask with at most `radius` bits set, 0 first: XORed with a band's
    bits they give each variant within `radius` bits of it."""
    return [sum(1 << bit for bit in bits) for flipped in range(radius + 1)
            for bits in itertools.combinations(range(width), flipped)]


def near_duplicates(new: DataFrame, every: DataFrame, bands: int, band_radius: int,
                    max_distance: int) -> Pairs:
    """Pairs of a `new` image and any image of `every` (both with uri and phash; `every`
    holds the new ones too) of which a band differs in at most `band_radius` bits and the
    whole hashes in at most `max_distance` bits."""
    candidates, compared = _banded_candidates(new, every, "phash", "phash", bands, band_radius)
    found = (candidates
             .withColumn("distance", F.bit_count(F.col("key").bitwiseXOR(F.col("other_key")))
                         .cast("int"))
             .where(F.col("distance") <= max_distance))
    return Pairs(_unordered(found), compared)


def similar_images(new: DataFrame, every: DataFrame, k: int, max_distance: float, bands: int,
                   band_radius: int, seed: int) -> Pairs:
    """Each `new` image's `k` nearest images of `every` (both with uri and embedding) within
    `max_distance`, by the Euclidean distance of the embeddings scaled to unit length. Pairs
    are compared when their 64-bit random-hyperplane signatures (`embedding_signature`, a bit
    per hyperplane: which side of it the embedding lies) have a band within `band_radius` bits,
    as for near duplicates: two embeddings at angle t differ in a bit with probability t/pi."""
    def signed(frame: DataFrame) -> DataFrame:
        return (frame.where(F.size("embedding") > 0)
                .select("uri", embedding_signature(F.col("embedding"), seed).alias("s"))
                .select("uri", "s.signature", "s.unit"))

    candidates, compared = _banded_candidates(signed(new), signed(every), "signature", "unit",
                                              bands, band_radius)
    squares = F.zip_with("payload", "other_payload", lambda a, b: (a - b) * (a - b))
    distance = F.sqrt(F.aggregate(squares, F.lit(0.0), lambda total, x: total + x))
    nearest = Window.partitionBy("uri").orderBy("distance", "other")
    found = (candidates.withColumn("distance", distance)
             .where(F.col("distance") <= max_distance)
             .withColumn("_rank", F.row_number().over(nearest))
             .where(F.col("_rank") <= k))
    return Pairs(_unordered(found), compared)


def embedding_signature(embedding: Column, seed: int) -> Column:
    """A struct of the embedding's `hyperplane_signatures` (`signature`, a signed 64-bit int)
    and the embedding scaled to unit length (`unit`, floats; an all-zero embedding stays
    zero)."""

    @pandas_udf("signature long, unit array<float>")
    def sign(embeddings: pd.Series) -> pd.DataFrame:
        if embeddings.empty:
            return pd.DataFrame({"signature": pd.Series(dtype="int64"),
                                 "unit": pd.Series(dtype="object")})
        signatures, units = hyperplane_signatures(np.stack(embeddings.to_numpy()), seed)
        return pd.DataFrame({"signature": signatures, "unit": list(units)})

    return sign(embedding)


def hyperplane_signatures(vectors: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The 64-bit random-hyperplane signatures of `vectors` (n, features): int64 (n,), bit i
    set when the vector is on the positive side of hyperplane i (through the origin, the
    hyperplanes drawn from a normal distribution seeded by `seed`); and the vectors scaled to
    unit length, float32 (n, features). Vectors all on one side of the origin (post-ReLU
    embeddings not centred) share most bits whatever they show."""
    vectors = vectors.astype(np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    units = vectors / np.where(norms == 0, 1.0, norms)
    planes = np.random.default_rng(seed).standard_normal((HASH_BITS, vectors.shape[1]))
    bits = np.packbits(units @ planes.T > 0, axis=1)
    return bits.view(">i8")[:, 0].astype(np.int64), units.astype(np.float32)


def _banded_candidates(new: DataFrame, every: DataFrame, key: str, payload: str, bands: int,
                       band_radius: int) -> tuple[DataFrame, int]:
    """Each distinct (uri, key, payload, other, other_key, other_payload) of a `new` row and
    another row of `every` whose 64-bit `key`s have a band within `band_radius` bits, and
    how many (probe, row) pairs the equi-join on (band, bits) made."""
    def banded(frame: DataFrame) -> DataFrame:
        return (frame.where(F.col(key).isNotNull())
                .select("uri", F.col(key).alias("key"), F.col(payload).alias("payload"),
                        F.explode(hash_bands(F.col(key), bands)).alias("b"))
                .select("uri", "key", "payload", "b.band", "b.bits"))

    masks = F.array(*(F.lit(mask).cast("long")
                      for mask in flip_masks(HASH_BITS // bands, band_radius)))
    probes = (banded(new).select("uri", "key", "payload", "band", "bits",
                                 F.explode(masks).alias("mask"))
              .select("uri", "key", "payload", "band",
                      F.col("bits").bitwiseXOR(F.col("mask")).alias("bits")))
    rows = banded(every)
    candidates = (probes.alias("l").join(rows.alias("r"), ["band", "bits"])
                  .where(F.col("l.uri") != F.col("r.uri"))
                  .select("l.uri", "l.key", "l.payload", F.col("r.uri").alias("other"),
                          F.col("r.key").alias("other_key"),
                          F.col("r.payload").alias("other_payload"))
                  .dropDuplicates(["uri", "other"]))
    return candidates, _bucket_pairs(probes, rows, ["band", "bits"])


def _unordered(pairs: DataFrame) -> DataFrame:
    """(uri, other, distance) with `uri` the lesser of each pair, each pair once."""
    return (pairs.select(F.least("uri", "other").alias("uri"),
                         F.greatest("uri", "other").alias("other"), "distance")
            .dropDuplicates(["uri", "other"]))


def _bucket_pairs(left: DataFrame, right: DataFrame, keys: list[str]) -> int:
    """How many (left row, right row) pairs with different uris the equi-join on `keys` makes:
    per bucket, left rows x right rows, less each left row meeting itself."""
    per_bucket = (left.groupBy(keys).count().withColumnRenamed("count", "n_left")
                  .join(right.groupBy(keys).count().withColumnRenamed("count", "n_right"), keys))
    meetings = per_bucket.agg(F.sum(F.col("n_left") * F.col("n_right"))).first()[0] or 0
    selves = left.join(right, [*keys, "uri"], "left_semi").count()
    return int(meetings - selves)
