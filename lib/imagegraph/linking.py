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
- similar images: unit-length embeddings bucketed by Spark ML's
  `BucketedRandomProjectionLSH` (`approxSimilarityJoin`), each new image's k nearest within
  the distance kept.

Each also says how many pairs its buckets put side by side (`pairs_compared`): what the join
costs, against n_new * n_all for all pairs.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from pyspark.ml.feature import BucketedRandomProjectionLSH, Normalizer
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from imagegraph.perceptual_hash import HASH_BITS

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
    def banded(frame: DataFrame) -> DataFrame:
        return (frame.where(F.col("phash").isNotNull())
                .select("uri", "phash", F.explode(hash_bands(F.col("phash"), bands)).alias("b"))
                .select("uri", "phash", "b.band", "b.bits"))

    masks = F.array(*(F.lit(mask).cast("long")
                      for mask in flip_masks(HASH_BITS // bands, band_radius)))
    probes = (banded(new).select("uri", "phash", "band", "bits", F.explode(masks).alias("mask"))
              .select("uri", "phash", "band",
                      F.col("bits").bitwiseXOR(F.col("mask")).alias("bits")))
    left, right = probes.alias("l"), banded(every).alias("r")
    candidates = left.join(right, ["band", "bits"]).where(F.col("l.uri") != F.col("r.uri"))
    found = (candidates.select(
        F.least("l.uri", "r.uri").alias("uri"), F.greatest("l.uri", "r.uri").alias("other"),
        F.bit_count(F.col("l.phash").bitwiseXOR(F.col("r.phash"))).cast("int").alias("distance"))
        .where(F.col("distance") <= max_distance)
        .dropDuplicates(["uri", "other"]))
    return Pairs(found, _bucket_pairs(probes, banded(every), ["band", "bits"]))


def similar_images(new: DataFrame, every: DataFrame, k: int, max_distance: float,
                   bucket_length: float, hash_tables: int, seed: int) -> Pairs:
    """Each `new` image's `k` nearest images of `every` (both with uri and a non-empty
    embedding) within `max_distance`, by the Euclidean distance of the embeddings scaled to
    unit length, found by `BucketedRandomProjectionLSH.approxSimilarityJoin`."""
    def unit(frame: DataFrame) -> DataFrame:
        vectors = (frame.where(F.size("embedding") > 0)
                   .select("uri", array_to_vector("embedding").alias("vector")))
        return Normalizer(inputCol="vector", outputCol="unit", p=2.0).transform(vectors)

    new_units, every_units = unit(new), unit(every)
    lsh = BucketedRandomProjectionLSH(inputCol="unit", outputCol="hashes", seed=seed,
                                      bucketLength=bucket_length, numHashTables=hash_tables)
    model = lsh.fit(every_units)
    new_hashed, every_hashed = model.transform(new_units), model.transform(every_units)
    joined = (model.approxSimilarityJoin(new_hashed, every_hashed, max_distance, "distance")
              .select(F.col("datasetA.uri").alias("uri"), F.col("datasetB.uri").alias("other"),
                      "distance")
              .where(F.col("uri") != F.col("other")))
    nearest = Window.partitionBy("uri").orderBy("distance", "other")
    found = (joined.withColumn("_rank", F.row_number().over(nearest))
             .where(F.col("_rank") <= k)
             .select(F.least("uri", "other").alias("uri"),
                     F.greatest("uri", "other").alias("other"), "distance")
             .dropDuplicates(["uri", "other"]))

    def buckets(hashed: DataFrame) -> DataFrame:
        return (hashed.select("uri", F.posexplode("hashes").alias("table", "h"))
                .select("uri", "table", vector_to_array("h")[0].alias("bucket")))

    return Pairs(found, _bucket_pairs(buckets(new_hashed), buckets(every_hashed),
                                      ["table", "bucket"]))


def _bucket_pairs(left: DataFrame, right: DataFrame, keys: list[str]) -> int:
    """How many (left row, right row) pairs with different uris the equi-join on `keys` makes:
    per bucket, left rows x right rows, less each left row meeting itself."""
    per_bucket = (left.groupBy(keys).count().withColumnRenamed("count", "n_left")
                  .join(right.groupBy(keys).count().withColumnRenamed("count", "n_right"), keys))
    meetings = per_bucket.agg(F.sum(F.col("n_left") * F.col("n_right"))).first()[0] or 0
    selves = left.join(right, [*keys, "uri"], "left_semi").count()
    return int(meetings - selves)
