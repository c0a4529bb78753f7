"""The training feed: labeled images in Spark -> petastorm's Parquet cache -> tf.data batches.

Spark side: `labeled_images` decodes every image under the input (label = parent folder) to
uint8 pixels, 1 byte a pixel, stored as one binary value per image (`pixel_feed: float32`
stores 4-byte floats instead, the former feed, kept to measure against), with its content's
sha256 and perceptual hash; `assign_split` puts each image in the training, validation or test
split by its content, so that copies of one image never sit on two sides.

TensorFlow side: `tf_batches` opens a petastorm reader (one shard of it per training worker)
and maps each batch to (model input, label, sample weight): the pixels cast to float32 in
TensorFlow, augmented when training (`Augmentation`), preprocessed for the model's family.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    FloatType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from imagegraph.config import Config, S3Config, TrainingConfig
from imagegraph.imaging.decode import UndecodableImage, decode_image
from imagegraph.imaging.perceptual_hash import perceptual_hash
from imagegraph.model.artifact import preprocess
from imagegraph.storage.sources import read_images
from imagegraph.train import cache_store

PIXELS = {"uint8": "pixels", "float32": "features"}
"""The column holding an image's pixels, by `training.pixel_feed`."""
TRAIN, VALIDATION, TEST = "train", "validation", "test"
"""The splits: trained on; choosing the early-stopping and exported epoch; only measured."""


@dataclass(frozen=True)
class Augmentation:
    """Random changes to training images, each 0 or False when off: `flip` left-right,
    `crop` (up to this fraction of each side cut away, the rest resized back), `brightness`
    (up to this fraction of 255 added or taken), `contrast` (up to this fraction more or less
    contrast around the image's mean)."""

    flip: bool = False
    crop: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0

    @classmethod
    def from_config(cls, training: TrainingConfig) -> "Augmentation":
        return cls(training.augment_flip, training.augment_crop, training.augment_brightness,
                   training.augment_contrast)


@dataclass(frozen=True)
class FeedSpec:
    """How batches are made: image shape (height, width, channels), the pixel column's kind
    (`pixel_feed`), the model family's `preprocessing`, images per batch on one worker, and
    each class's loss weight (index = label); `cache_s3`: how an `s3://` cache is reached (the
    job's S3 settings)."""

    shape: tuple[int, int, int]
    pixel_feed: str
    preprocessing: str
    batch_size: int
    class_weights: tuple[float, ...]
    augmentation: Augmentation = Augmentation()
    cache_s3: S3Config = S3Config()


def label_of(path: F.Column) -> F.Column:
    """The label of an image: the name of its parent folder."""
    return F.element_at(F.split(path, "/"), -2)


def decode_pixels(content: F.Column, config: Config) -> F.Column:
    """A (pixels: binary of height*width*channels uint8 values, features: the same as
    array<float> when `pixel_feed` is float32, phash: the 64-bit perceptual hash of those
    pixels, reason) struct; the pixel column is null and reason set when the bytes do not
    decode."""
    training, limits = config.training, config.inference
    height, width = training.input_height, training.input_width
    channels = 1 if training.color_mode == "grayscale" else 3
    as_float = training.pixel_feed == "float32"
    schema = StructType([StructField("pixels", BinaryType(), True),
                         StructField("features", ArrayType(FloatType()), True),
                         StructField("phash", LongType(), True),
                         StructField("reason", StringType(), True)])

    @pandas_udf(schema)
    def decode(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        for contents in batches:
            pixels, features, hashes, reasons = [], [], [], []
            for data in contents:
                try:
                    image = decode_image(bytes(data), height, width, channels,
                                         limits.max_image_bytes, limits.max_image_pixels)
                except UndecodableImage as exc:
                    pixels.append(None)
                    features.append(None)
                    hashes.append(None)
                    reasons.append(exc.reason)
                    continue
                flat = image.pixels.astype(np.uint8).ravel()
                pixels.append(None if as_float else flat.tobytes())
                features.append(flat.astype(np.float32) if as_float else None)
                hashes.append(perceptual_hash(image.pixels.astype(np.uint8)))
                reasons.append(None)
            yield pd.DataFrame({"pixels": pixels, "features": features,
                                "phash": pd.array(hashes, dtype="Int64"), "reason": reasons})

    return decode(content)


def labeled_images(spark: SparkSession, config: Config, input_uri: str) -> DataFrame:
    """(path, label_name, pixels or features, sha256 of the bytes as hex, phash, reason,
    split) of every image under `input_uri`, cached; undecodable images have a null pixel
    column and phash."""
    training = config.training
    column = PIXELS[training.pixel_feed]
    images = read_images(spark, input_uri, config.input)
    decoded = (images.select("path", label_of(F.col("path")).alias("label_name"),
                             F.sha2(F.col("content"), 256).alias("sha256"),
                             decode_pixels(F.col("content"), config).alias("d"))
               .select("path", "label_name", F.col(f"d.{column}").alias(column), "sha256",
                       "d.phash", "d.reason"))
    return assign_split(decoded, training.holdout_percent, training.test_percent).cache()


def assign_split(images: DataFrame, validation_percent: int, test_percent: int) -> DataFrame:
    """`images` with a `split` column (TRAIN, VALIDATION or TEST) drawn from a hash of each
    image's content: its perceptual hash (`phash`), or its `sha256` where it has none. The same
    bytes under two paths, and re-encodings whose pixels hash alike, share a split; moving the
    data to another prefix changes no split. About `test_percent` of the images are tested,
    `validation_percent` validate."""
    group = F.coalesce(F.col("phash").cast("string"), F.col("sha256"))
    bucket = F.abs(F.xxhash64(group)) % 100
    return images.withColumn(
        "split", F.when(bucket < test_percent, TEST)
        .when(bucket < test_percent + validation_percent, VALIDATION).otherwise(TRAIN))


def balanced_class_weights(counts: list[int]) -> tuple[float, ...]:
    """Per-class loss weights n / (classes * count) from the images per class (index =
    label), so that every class weighs the same in total; 1.0 for all when balanced."""
    total, classes = sum(counts), len(counts)
    return tuple(round(total / (classes * count), 6) if count else 0.0 for count in counts)


def cache_bytes(spark: SparkSession, converter) -> int:
    """Bytes of the Parquet files petastorm wrote for `converter`, at any Hadoop URI."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(converter.cache_dir_url)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return int(fs.getContentSummary(path).getLength())


def converter_for(frame: DataFrame, pixel_feed: str):
    """The petastorm converter of `frame` (pixel column and label), written to the parent
    cache directory configured on the session."""
    from petastorm.spark import make_spark_converter

    return make_spark_converter(frame, dtype="float32" if pixel_feed == "float32" else None)


def to_pixels(batch_column, spec: FeedSpec):
    """A petastorm batch's pixel column -> float32 (batch, height, width, channels), 0..255:
    uint8 bytes decoded and cast here, in TensorFlow; float32 arrays reshaped."""
    import tensorflow as tf

    if spec.pixel_feed == "uint8":
        batch_column = tf.io.decode_raw(batch_column, tf.uint8)
    return tf.cast(tf.reshape(batch_column, (-1, *spec.shape)), tf.float32)


def augment(images, augmentation: Augmentation):
    """Randomly changed copies of float32 (batch, height, width, channels) images in 0..255,
    each image drawn on its own; the identity when every change is off."""
    import tensorflow as tf

    size = tf.shape(images)[0]
    if augmentation.flip:
        images = tf.image.random_flip_left_right(images)
    if augmentation.crop:
        cut = tf.random.uniform((size, 4), 0.0, augmentation.crop)
        boxes = tf.stack([cut[:, 0], cut[:, 1], 1.0 - cut[:, 2], 1.0 - cut[:, 3]], axis=1)
        images = tf.image.crop_and_resize(images, boxes, tf.range(size),
                                          tf.shape(images)[1:3])
    if augmentation.brightness:
        images += tf.random.uniform((size, 1, 1, 1), -augmentation.brightness,
                                    augmentation.brightness) * 255.0
    if augmentation.contrast:
        mean = tf.reduce_mean(images, axis=(1, 2, 3), keepdims=True)
        factor = tf.random.uniform((size, 1, 1, 1), 1.0 - augmentation.contrast,
                                   1.0 + augmentation.contrast)
        images = mean + (images - mean) * factor
    return tf.clip_by_value(images, 0.0, 255.0)


@contextlib.contextmanager
def tf_batches(converter, spec: FeedSpec, training: bool, shard: int = 0, shard_count: int = 1):
    """A tf.data.Dataset of (model input float32, label int32, sample weight float32) batches
    of `spec.batch_size` from petastorm `converter`: endless and shuffled, of shard `shard` of
    `shard_count`, augmented, when `training`; otherwise every image exactly once, in order.

    The one pass is the first `len(converter)` images of an endless, unshuffled reader: a
    petastorm 0.13.1 reader of one epoch loses rows at random when it ends (97 rows read back
    as 91, 73 or 49 here)."""
    import tensorflow as tf

    cache_store.register(spec.cache_s3)  # in a training worker's own process too
    column = PIXELS[spec.pixel_feed]
    weights = tf.constant(spec.class_weights, tf.float32)
    options = ({"workers_count": 2, "shuffling_queue_capacity": 2048, "cur_shard": shard,
                "shard_count": shard_count, "shard_seed": 0} if training
               else {"workers_count": 1, "shuffle_row_groups": False})

    def to_example(batch):
        images = to_pixels(getattr(batch, column), spec)
        if training:
            images = augment(images, spec.augmentation)
        label = tf.cast(batch.label, tf.int32)
        return preprocess(images, spec.preprocessing), label, tf.gather(weights, label)

    with converter.make_tf_dataset(batch_size=spec.batch_size, num_epochs=None,
                                   **options) as dataset:
        if not training:
            dataset = dataset.unbatch().take(len(converter)).batch(spec.batch_size)
        yield dataset.map(to_example)
