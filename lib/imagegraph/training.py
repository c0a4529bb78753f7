"""The training run: labeled images (label = parent folder) -> decoded in Spark -> petastorm ->
a small CNN in TensorFlow -> evaluated on a held-out split -> exported as a model artifact.

`run_training` is what `jobs/train.py` calls once arguments and configuration are parsed.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from imagegraph import hadoop_fs
from imagegraph.calibration import store_training_sample
from imagegraph.config import Config
from imagegraph.decode import UndecodableImage, decode_image
from imagegraph.errors import JobError
from imagegraph.model_artifact import (ARTIFACT_FILES, ModelMetadata, preprocess,
                                       write_artifact)
from imagegraph.sources import read_images

log = logging.getLogger(__name__)

PREPROCESSING = "scale_0_1"
_DECODED = StructType([StructField("features", ArrayType(FloatType()), True),
                       StructField("reason", StringType(), True)])


@dataclass(frozen=True)
class TrainingResult:
    """What was exported where, and how well it did on the held-out split."""

    metadata: ModelMetadata
    train_images: int
    holdout_images: int
    undecodable_images: int


def label_of(path: F.Column) -> F.Column:
    """The label of an image: the name of its parent folder."""
    return F.element_at(F.split(path, "/"), -2)


def decode_features(content: F.Column, config: Config) -> F.Column:
    """A (features: array<float> of height*width*channels pixel values 0..255, reason) struct;
    features is null and reason set when the bytes do not decode. The model's preprocessing is
    applied later, in TensorFlow, as at inference."""
    training, limits = config.training, config.inference
    height, width = training.input_height, training.input_width
    channels = 1 if training.color_mode == "grayscale" else 3

    @pandas_udf(_DECODED)
    def decode(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        for contents in batches:
            features, reasons = [], []
            for data in contents:
                try:
                    image = decode_image(bytes(data), height, width, channels,
                                         limits.max_image_bytes, limits.max_image_pixels)
                except UndecodableImage as exc:
                    features.append(None)
                    reasons.append(exc.reason)
                    continue
                features.append(image.pixels.ravel().astype(np.float32))
                reasons.append(None)
            yield pd.DataFrame({"features": features, "reason": reasons})

    return decode(content)


def build_cnn(height: int, width: int, channels: int, num_classes: int, learning_rate: float):
    """A small Keras CNN (two conv blocks, dropout, softmax), compiled for integer labels."""
    import tensorflow as tf

    layers = tf.keras.layers
    model = tf.keras.Sequential([
        layers.Input(shape=(height, width, channels)),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dropout(0.3),
        layers.Dense(128, activation="relu"),
        layers.Dense(num_classes, activation="softmax"),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def run_training(spark: SparkSession, config: Config, input_uri: str,
                 output_uri: str) -> TrainingResult:
    """Train on the labeled images under `input_uri`; export the artifact to `output_uri`."""
    import tensorflow as tf
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    training = config.training
    channels = 1 if training.color_mode == "grayscale" else 3
    tf.keras.utils.set_random_seed(training.seed)
    images = read_images(spark, input_uri, config.input)
    labeled = (images.select("path", label_of(F.col("path")).alias("label_name"),
                             decode_features(F.col("content"), config).alias("d"))
               .select("path", "label_name", "d.features", "d.reason")
               .cache())
    undecodable = labeled.where(F.col("features").isNull()).count()
    if undecodable:
        examples = [row["path"] + ": " + row["reason"] for row in
                    labeled.where(F.col("features").isNull()).limit(5).collect()]
        log.warning("%d undecodable training images skipped, e.g. %s", undecodable, examples)
    decoded = labeled.where(F.col("features").isNotNull())
    classes = tuple(sorted(row["label_name"] for row in
                           decoded.select("label_name").distinct().collect()))
    if len(classes) < 2:
        raise JobError(f"input {input_uri}: found {len(classes)} label folder(s) with images; "
                       "training needs images in at least 2 folders (one per class)")
    index = spark.createDataFrame([(name, i) for i, name in enumerate(classes)],
                                  "label_name string, label int")
    split = F.abs(F.xxhash64("path")) % 100 < training.holdout_percent
    dataset = decoded.join(F.broadcast(index), "label_name").withColumn("holdout", split)
    train_df = dataset.where(~F.col("holdout")).select("features", "label")
    holdout_df = dataset.where(F.col("holdout")).select("features", "label")

    cache_dir = training.cache_url or "file://" + tempfile.mkdtemp(prefix="imagegraph-petastorm-")
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, cache_dir)
    train_data = make_spark_converter(train_df, dtype="float32")
    holdout_data = make_spark_converter(holdout_df, dtype="float32")
    if len(train_data) == 0 or len(holdout_data) == 0:
        raise JobError(f"input {input_uri}: {len(train_data)} training and {len(holdout_data)} "
                       "held-out images; need at least one of each")
    log.info("training on %d images, holding out %d, %d classes: %s", len(train_data),
             len(holdout_data), len(classes), ", ".join(classes))

    shape = (training.input_height, training.input_width, channels)

    def to_example(batch):
        return preprocess(tf.reshape(batch.features, (-1, *shape)), PREPROCESSING), batch.label

    model = build_cnn(*shape, len(classes), training.learning_rate)
    try:
        with train_data.make_tf_dataset(batch_size=training.batch_size, num_epochs=None,
                                        workers_count=2, shuffling_queue_capacity=2048) as train_ds:
            steps = math.ceil(len(train_data) / training.batch_size)
            model.fit(train_ds.map(to_example), steps_per_epoch=steps, epochs=training.epochs,
                      verbose=2)
        with holdout_data.make_tf_dataset(batch_size=training.batch_size, num_epochs=1,
                                          workers_count=1) as holdout_ds:
            loss, accuracy = model.evaluate(
                holdout_ds.map(to_example), verbose=0,
                steps=math.ceil(len(holdout_data) / training.batch_size))
    finally:
        train_data.delete()
        holdout_data.delete()
        labeled.unpersist()

    metadata = ModelMetadata(
        name=training.model_name,
        version=training.model_version or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        input_height=training.input_height, input_width=training.input_width,
        channels=channels, preprocessing=PREPROCESSING, classes=classes,
        metrics={"holdout_accuracy": round(float(accuracy), 4),
                 "holdout_loss": round(float(loss), 4),
                 "train_images": len(train_data), "holdout_images": len(holdout_data)},
        uri=output_uri.rstrip("/"),
    )
    metadata = store_training_sample(spark, dataset, metadata,  # for inference.precision int8
                                     config.inference.int8_calibration_images,
                                     config.inference.int8_check_images)
    with tempfile.TemporaryDirectory(prefix="imagegraph-export-") as local:
        write_artifact(local, model, metadata)
        for name in ARTIFACT_FILES:
            hadoop_fs.copy_from_local(spark, os.path.join(local, name),
                                      f"{metadata.uri}/{name}")
    log.info("exported %s to %s (held-out accuracy %.4f)", metadata.tag, output_uri, accuracy)
    return TrainingResult(metadata, len(train_data), len(holdout_data), undecodable)
