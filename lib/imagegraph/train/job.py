"""The training run: labeled images (label = parent folder) -> decoded to uint8 pixels in Spark
-> split by content into training, validation and test -> petastorm's cache -> a network
trained in TensorFlow, on the driver or on N Spark tasks together, the validation split
choosing its epoch -> evaluated on the test split, which chose nothing -> exported with its
evaluation as a model artifact.

    training_data         the feed: decoding, the split, petastorm, tf.data batches, augmentation
    backbones             the networks: small CNN, or a Keras application under a new head
    training_loop         what each worker runs: phases, epochs, early stopping, checkpoints
    training_checkpoints  the per-epoch checkpoints under the output URI (`--resume`)
    distributed_training  the barrier stage behind `--workers N`
    evaluation            accuracy, top-k, per-class figures, confusion matrix,
                          calibration error, plots
    temperature           temperature scaling, fitted on the validation split
    lineage               what made the model: input, data fingerprint, code, settings

`run_training` is what `jobs/train.py` calls once arguments and configuration are parsed.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from imagegraph.config import Config, S3Config, TrainingConfig
from imagegraph.errors import JobError
from imagegraph.model.artifact import ARTIFACT_FILES, ModelMetadata, write_artifact
from imagegraph.model.cache import with_embedding
from imagegraph.model.calibration import store_training_sample
from imagegraph.model.temperature import TEMPERATURE_METRIC
from imagegraph.storage import hadoop_fs
from imagegraph.train import cache_store
from imagegraph.train.backbones import MIN_APPLICATION_SIZE, PREPROCESSING
from imagegraph.train.checkpoints import CheckpointStore
from imagegraph.train.data import (
    PIXELS,
    TEST,
    TRAIN,
    VALIDATION,
    Augmentation,
    FeedSpec,
    balanced_class_weights,
    cache_bytes,
    converter_for,
    labeled_images,
    tf_batches,
)
from imagegraph.train.evaluation import (
    CONFUSION_PLOT,
    CURVES_PLOT,
    EVALUATION_FILE,
    EVALUATION_FILES,
    RELIABILITY_PLOT,
    Evaluation,
    evaluate,
    write_evaluation,
)
from imagegraph.train.lineage import data_fingerprint, lineage
from imagegraph.train.loop import TrainedModel, TrainingPlan, train_model
from imagegraph.train.temperature import fit_temperature

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingResult:
    """What was exported where, how well it did on the test split (`evaluation`; the
    validation split, `holdout_images`, chose the epoch), and what the feed cost:
    petastorm cache bytes per image, training images a second (over all workers, the epochs'
    step time only), images each worker stepped over."""

    metadata: ModelMetadata
    train_images: int
    holdout_images: int
    test_images: int
    undecodable_images: int
    evaluation: Evaluation
    cache_bytes_per_image: float
    images_per_second: float
    worker_images: tuple[int, ...]

    def summary_lines(self) -> list[str]:
        """What `jobs/train.py` prints: the model, its network, its images and figures."""
        metadata, trained = self.metadata, self.metadata.training
        return [
            f"model {metadata.tag} -> {metadata.uri}",
            f"  classes              {len(metadata.classes)}: {', '.join(metadata.classes)}",
            f"  network              {trained['base']} (weights: {trained['weights']}), "
            f"{trained['epochs_trained']} epochs, best {trained['best_epoch']}"
            f"{', stopped early' if trained['early_stopped'] else ''}",
            f"  images               {self.train_images} trained, {self.holdout_images} "
            f"validating, {self.test_images} tested, {self.undecodable_images} undecodable",
            f"  feed                 {self.cache_bytes_per_image:.0f} bytes/image in the "
            f"petastorm cache ({trained['pixel_feed']}), {self.images_per_second:.0f} "
            f"images/s on {trained['workers']} worker(s)",
            f"  images per worker    "
            f"{', '.join(str(count) for count in self.worker_images)} stepped over",
            f"  validation accuracy  {metadata.metrics['holdout_accuracy']:.4f} "
            "(chose the epoch)",
            f"  test accuracy        {metadata.metrics['test_accuracy']:.4f} "
            f"({self.test_images} images that chose nothing), top-{self.evaluation.top_k} "
            f"{self.evaluation.top_k_accuracy:.4f}",
            f"  test calibration     ECE {self.evaluation.ece:.4f} as scored, "
            f"{self.evaluation.scaled_ece:.4f} at temperature "
            f"{self.evaluation.temperature:g} (fitted on validation)",
            f"  evaluation           {metadata.uri}/{EVALUATION_FILE}, "
            f"{metadata.uri}/{CONFUSION_PLOT}, {metadata.uri}/{RELIABILITY_PLOT}, "
            f"{metadata.uri}/{CURVES_PLOT}",
        ]


def check_network(training: TrainingConfig) -> None:
    """Raise `JobError` for a base that cannot take the configured input."""
    if training.base == "small_cnn":
        return
    if training.color_mode != "rgb":
        raise JobError(f"training.base {training.base} takes RGB images: set "
                       "training.color_mode=rgb")
    if min(training.input_height, training.input_width) < MIN_APPLICATION_SIZE:
        raise JobError(f"training.base {training.base} needs input of at least "
                       f"{MIN_APPLICATION_SIZE}x{MIN_APPLICATION_SIZE} pixels")


def _local_weights(spark: SparkSession, weights: str, directory: str) -> str | None:
    """None, 'imagenet', or a local copy of the weights file at the URI `weights`."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return weights
    if not hadoop_fs.exists(spark, weights):
        raise JobError(f"--weights {weights}: no such file")
    local = os.path.join(directory, os.path.basename(weights.rstrip("/")) or "backbone.weights.h5")
    hadoop_fs.copy_to_local(spark, weights, local)
    return local


def run_training(spark: SparkSession, config: Config, input_uri: str, output_uri: str,
                 resume: bool = False) -> TrainingResult:
    """Train on the labeled images under `input_uri`; export the artifact to `output_uri`.
    `resume` continues from the checkpoints an interrupted run left under `output_uri`. The
    local working files (petastorm's cache when `training.cache_url` is unset, the weights
    and the export) are removed on every exit."""
    check_network(config.training)
    with tempfile.TemporaryDirectory(prefix="imagegraph-training-",
                                     ignore_cleanup_errors=True) as work:
        data = _labeled_data(spark, config, input_uri)
        try:
            return _train_and_export(spark, config, data, output_uri, resume, work)
        finally:
            data.labeled.unpersist()


@dataclass(frozen=True)
class _LabeledData:
    """The decoded images under `input_uri` (`labeled`, cached; `dataset` with `label`,
    `split` and `holdout`), their classes, the count of undecodable images left out, and the
    pixel column fed."""

    input_uri: str
    labeled: DataFrame
    dataset: DataFrame
    classes: tuple[str, ...]
    undecodable: int
    column: str


def _labeled_data(spark: SparkSession, config: Config, input_uri: str) -> _LabeledData:
    column = PIXELS[config.training.pixel_feed]
    labeled = labeled_images(spark, config, input_uri)
    undecodable = labeled.where(F.col(column).isNull()).count()
    if undecodable:
        examples = [row["path"] + ": " + row["reason"] for row in
                    labeled.where(F.col(column).isNull()).limit(5).collect()]
        log.warning("%d undecodable training images skipped, e.g. %s", undecodable, examples)
    decoded = labeled.where(F.col(column).isNotNull())
    classes = tuple(sorted(row["label_name"] for row in
                           decoded.select("label_name").distinct().collect()))
    if len(classes) < 2:
        labeled.unpersist()
        raise JobError(f"input {input_uri}: found {len(classes)} label folder(s) with images; "
                       "training needs images in at least 2 folders (one per class)")
    index = spark.createDataFrame([(name, i) for i, name in enumerate(classes)],
                                  "label_name string, label int")
    dataset = (decoded.join(F.broadcast(index), "label_name")
               .withColumn("holdout", F.col("split") == VALIDATION))
    return _LabeledData(input_uri, labeled, dataset, classes, undecodable, column)


def _train_and_export(spark: SparkSession, config: Config, data: _LabeledData,
                      output_uri: str, resume: bool, work: str) -> TrainingResult:
    """Feed the three splits through petastorm, train, evaluate on the test split, export."""
    from petastorm.spark import SparkDatasetConverter

    training = config.training
    cache_store.register(config.s3)
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF,
                   _cache_url(spark, training.cache_url, work))
    # at least a file per worker, since petastorm shards a dataset by its row groups
    train_df = (data.dataset.where(F.col("split") == TRAIN).select(data.column, "label")
                .repartition(max(2, 2 * training.workers)))
    counts = dict(train_df.groupBy("label").count().collect())
    splits = (converter_for(train_df, training.pixel_feed),
              converter_for(data.dataset.where(F.col("split") == VALIDATION)
                            .select(data.column, "label"), training.pixel_feed),
              converter_for(data.dataset.where(F.col("split") == TEST)
                            .select(data.column, "label"), training.pixel_feed))
    try:
        train_data, holdout_data, test_data = splits
        if not all(map(len, splits)):
            raise JobError(f"input {data.input_uri}: {len(train_data)} training, "
                           f"{len(holdout_data)} validation and {len(test_data)} test images "
                           "(split by content); need at least one of each")
        per_image = sum(cache_bytes(spark, split) for split in splits) / sum(map(len, splits))
        log.info("training on %d images, validating on %d, testing on %d, %d classes: %s; "
                 "petastorm cache %.0f bytes/image (%s pixels)", len(train_data),
                 len(holdout_data), len(test_data), len(data.classes), ", ".join(data.classes),
                 per_image, training.pixel_feed)
        feed = _feed_spec(training, [counts.get(i, 0) for i in range(len(data.classes))],
                          config.s3)
        plan = TrainingPlan(
            base=training.base, weights=_local_weights(spark, training.weights, work),
            num_classes=len(data.classes), feed=feed, epochs=training.epochs,
            fine_tune_epochs=training.fine_tune_epochs,
            unfreeze_layers=training.unfreeze_layers, learning_rate=training.learning_rate,
            fine_tune_learning_rate=training.fine_tune_learning_rate,
            warmup_epochs=training.warmup_epochs,
            final_learning_rate_fraction=training.final_learning_rate_fraction,
            learning_rate_scaling=training.learning_rate_scaling,
            early_stopping_patience=training.early_stopping_patience,
            train_images=len(train_data), holdout_images=len(holdout_data),
            seed=training.seed, checkpoints=CheckpointStore.under(output_uri, config.s3),
            resume=resume)
        trained = _train(spark, plan, train_data, holdout_data, training.workers)
        model = _load_model(trained[0].model_bytes, work)
        network = with_embedding(model, feed.shape)
        labels, scores, embeddings = _outputs(network, holdout_data, feed)
        temperature = fit_temperature(labels, scores)
        embedding_centre = tuple(float(x) for x in embeddings.mean(axis=0))
        labels, scores, _ = _outputs(network, test_data, feed)
        evaluation = evaluate(labels, scores, data.classes, temperature)
        sizes = (len(train_data), len(holdout_data), len(test_data))
    finally:
        for split in splits:
            split.delete()

    state = trained[0].state
    images_per_second = state.images_trained / (sum(state.history.get("seconds", [])) or 1.0)
    trained_at = datetime.now(timezone.utc)
    metadata = _metadata(training, data.classes, feed, evaluation, state, sizes,
                         images_per_second, output_uri, trained_at,
                         lineage(training, data.input_uri, *data_fingerprint(data.dataset),
                                 trained_at), embedding_centre)
    metadata = store_training_sample(spark, data.dataset.where(F.col("split") != TEST),
                                     metadata,  # for int8: never the test split
                                     config.inference.int8_calibration_images,
                                     config.inference.int8_check_images, data.column)
    _export(spark, os.path.join(work, "export"), model, metadata, evaluation, state.history)
    plan.checkpoints.clear()
    log.info("exported %s to %s (test accuracy %.4f)", metadata.tag, output_uri,
             evaluation.accuracy)
    return TrainingResult(metadata, *sizes, data.undecodable, evaluation,
                          round(per_image, 1), round(images_per_second, 1),
                          tuple(result.worker_images for result in trained))


def _cache_url(spark: SparkSession, cache_url: str, work: str) -> str:
    """Where petastorm's cache goes: `cache_url` (an `hdfs://` one through WebHDFS at the
    NameNode's HTTP address), or a local directory under `work` when it is empty."""
    if not cache_url:
        return "file://" + os.path.join(work, "petastorm")
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    default = f"0.0.0.0:{cache_store.DEFAULT_NAMENODE_HTTP_PORT}"
    try:
        return cache_store.petastorm_url(
            cache_url, hadoop.get("dfs.namenode.http-address", default))
    except ValueError as exc:
        raise JobError(str(exc)) from None


def _feed_spec(training: TrainingConfig, class_counts: list[int], s3: S3Config) -> FeedSpec:
    """How batches are shaped, preprocessed, weighted and augmented, and read from an S3
    cache through `s3`."""
    channels = 1 if training.color_mode == "grayscale" else 3
    return FeedSpec(
        shape=(training.input_height, training.input_width, channels),
        pixel_feed=training.pixel_feed, preprocessing=PREPROCESSING[training.base],
        batch_size=training.batch_size,
        class_weights=(balanced_class_weights(class_counts)
                       if training.class_weighting == "balanced"
                       else (1.0,) * len(class_counts)),
        augmentation=Augmentation.from_config(training), cache_s3=s3)


def _load_model(model_bytes: bytes, work: str):
    """The chief's best model, a Keras model, from its `.keras` bytes."""
    import tensorflow as tf

    path = os.path.join(work, "best.keras")
    with open(path, "wb") as handle:
        handle.write(model_bytes)
    return tf.keras.models.load_model(path)


def _metadata(training: TrainingConfig, classes: tuple[str, ...], feed: FeedSpec,
              evaluation: Evaluation, state, sizes: tuple[int, int, int],
              images_per_second: float, output_uri: str, trained_at: datetime,
              lineage_record: dict, embedding_centre: tuple[float, ...]) -> ModelMetadata:
    """The artifact's metadata: what was trained how, its figures, its lineage and its
    `embedding_centre` (the validation images' mean embedding). `sizes`: training,
    validation and test images; `trained_at` (UTC) names the version when
    `training.model_version` is unset."""
    return ModelMetadata(
        name=training.model_name,
        version=training.model_version or trained_at.strftime("%Y%m%dT%H%M%SZ"),
        input_height=training.input_height, input_width=training.input_width,
        channels=feed.shape[2], preprocessing=PREPROCESSING[training.base], classes=classes,
        metrics={"test_accuracy": evaluation.accuracy,
                 "test_top_k": evaluation.top_k,
                 "test_top_k_accuracy": evaluation.top_k_accuracy,
                 "test_ece": evaluation.ece, TEMPERATURE_METRIC: evaluation.temperature,
                 "test_ece_at_temperature": evaluation.scaled_ece,
                 "holdout_accuracy": state.history["val_accuracy"][state.best_epoch - 1],
                 "holdout_loss": state.best_val_loss,
                 "train_images": sizes[0], "holdout_images": sizes[1], "test_images": sizes[2]},
        training={"base": training.base, "weights": training.weights,
                  "epochs_trained": len(state.history["loss"]), "best_epoch": state.best_epoch,
                  "early_stopped": state.phase_stopped, "workers": training.workers,
                  "pixel_feed": training.pixel_feed,
                  "images_per_second": round(images_per_second, 1),
                  "class_weights": list(feed.class_weights)},
        lineage=lineage_record, embedding_centre=embedding_centre, uri=output_uri.rstrip("/"),
    )


def _export(spark: SparkSession, export: str, model, metadata: ModelMetadata,
            evaluation: Evaluation, history: dict) -> None:
    """Write the artifact and its evaluation locally under `export`, then copy each file to
    the model's URI."""
    write_artifact(export, model, metadata)
    write_evaluation(export, evaluation, history, metadata.tag)
    for name in (*ARTIFACT_FILES, *EVALUATION_FILES):
        hadoop_fs.copy_from_local(spark, os.path.join(export, name), f"{metadata.uri}/{name}")


def _train(spark: SparkSession, plan: TrainingPlan, train_data, holdout_data,
           workers: int) -> list[TrainedModel]:
    if workers == 1:
        return [train_model(plan, train_data, holdout_data)]
    from imagegraph.train.distributed import train_on_executors

    return train_on_executors(spark, plan, train_data, holdout_data, workers)


def _outputs(network, split, feed: FeedSpec):
    """The class indices (n,), scores (n, classes) and embeddings (n, features) that `network`
    (a classifier `with_embedding`) gives the images of `split` (a petastorm converter), as
    NumPy arrays."""
    import numpy as np

    labels, scores, embeddings = [], [], []
    with tf_batches(split, feed, training=False) as batches:
        for images, batch_labels, _ in batches:
            batch_scores, batch_embeddings = network(images, training=False)
            labels.append(batch_labels.numpy())
            scores.append(batch_scores.numpy())
            embeddings.append(batch_embeddings.numpy())
    return np.concatenate(labels), np.concatenate(scores), np.concatenate(embeddings)
