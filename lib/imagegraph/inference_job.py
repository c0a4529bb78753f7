"""The inference run: list -> read -> classify -> Parquet -> graph upserts -> report.

`run_inference` is what `jobs/infer.py` calls once arguments and configuration are parsed.
"""
from __future__ import annotations

import logging
import secrets
import time
from dataclasses import replace
from datetime import datetime, timezone

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from imagegraph.config import Config
from imagegraph.graph.connection import check_reachable, with_resolved_region
from imagegraph.graph.load import load_predictions, write_model
from imagegraph.inference import STATUS_OK, InferenceSettings, classify_images
from imagegraph.model_artifact import ModelMetadata
from imagegraph.model_store import read_model_artifact
from imagegraph.report import RunReport
from imagegraph.sources import read_images

log = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"
DEAD_LETTER_DIR = "dead_letter"
STAGE_DECODE = "decode"
STAGE_GRAPH = "graph"


def new_run_id(now: datetime) -> str:
    """`20261126T201500Z-3f2a1c`: sortable by start time, unique across concurrent runs."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run_inference(spark: SparkSession, config: Config, input_uri: str, model_uri: str,
                  output_uri: str) -> RunReport:
    """Classify every object under `input_uri` with the model at `model_uri`, write Parquet
    under `output_uri` and, when `config.graph.enabled`, upsert the results into the graph."""
    started = time.monotonic()
    started_at = datetime.now(timezone.utc)
    output_uri = output_uri.rstrip("/")
    if config.graph.enabled:
        config = replace(config, graph=with_resolved_region(config.graph))
        check_reachable(config.graph)
    metadata, model_files = read_model_artifact(spark, model_uri)
    images = read_images(spark, input_uri, config.input)
    report = RunReport(run_id=new_run_id(started_at), input_uri=input_uri,
                       output_uri=output_uri, model=metadata.tag,
                       graph_enabled=config.graph.enabled)
    log.info("run %s: classifying %s with %s", report.run_id, input_uri, metadata.tag)

    if config.inference.partitions:
        images = images.repartition(config.inference.partitions)
    settings = InferenceSettings(
        top_k=min(config.inference.top_k, len(metadata.classes)),
        batch_size=config.inference.batch_size,
        max_image_bytes=config.inference.max_image_bytes,
        max_image_pixels=config.inference.max_image_pixels,
        threads=int(spark.conf.get("spark.task.cpus", "1")),
        embedding=config.inference.embedding,
    )
    broadcast = spark.sparkContext.broadcast(model_files)
    results = (images
               .select(classify_images(F.col("path"), F.col("content"), broadcast, metadata,
                                       settings).alias("c"), F.col("length").alias("bytes"))
               .select("c.*", "bytes")
               .withColumn("model", F.lit(metadata.tag))
               .withColumn("run_id", F.lit(report.run_id))
               .withColumn("inferred_at", F.lit(started_at))
               .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        counts = {(row["status"], row["reason"]): row["count"]
                  for row in results.groupBy("status", "reason").count().collect()}
        report.listed = sum(counts.values())
        report.classified = sum(n for (status, _), n in counts.items() if status == STATUS_OK)
        report.dead_lettered_by_reason = {reason: n for (status, reason), n in counts.items()
                                          if status != STATUS_OK}
        log.info("run %s: %d listed, %d classified, %d undecodable", report.run_id,
                 report.listed, report.classified, report.dead_lettered)
        (results.where(F.col("status") == STATUS_OK)
         .drop("status", "reason", *([] if settings.embedding else ["embedding"]))
         .write.mode("append").partitionBy("run_id").parquet(f"{output_uri}/{PREDICTIONS_DIR}"))
        _write_dead_letters(results.where(F.col("status") != STATUS_OK)
                            .select("uri", "reason", "bytes", "model", "run_id")
                            .withColumn("stage", F.lit(STAGE_DECODE)), output_uri, started_at)
    finally:
        results.unpersist()
        broadcast.unpersist()

    if config.graph.enabled and report.classified:
        base = f"{output_uri}/{PREDICTIONS_DIR}"  # read this run's files only: their schema
        predictions = (spark.read.option("basePath", base)
                       .parquet(f"{base}/run_id={report.run_id}"))
        _write_graph(spark, config, metadata, predictions, report, started_at)
    report.elapsed_s = time.monotonic() - started
    return report


def _write_dead_letters(rows: DataFrame, output_uri: str, recorded_at: datetime) -> None:
    (rows.withColumn("recorded_at", F.lit(recorded_at))
     .select("uri", "reason", "stage", "bytes", "model", "recorded_at", "run_id")
     .write.mode("append").partitionBy("run_id").parquet(f"{output_uri}/{DEAD_LETTER_DIR}"))


def _write_graph(spark: SparkSession, config: Config, metadata: ModelMetadata,
                 predictions: DataFrame, report: RunReport, written_at: datetime) -> None:
    """Model and class elements, then every prediction; failed rows become dead letters."""
    model_totals = write_model(config.graph, metadata)
    totals, failed = load_predictions(spark, config.graph, predictions, metadata.tag,
                                      report.run_id, written_at)
    try:
        report.graph_written = totals.rows_written
        report.graph_failed = totals.failed_rows
        report.vertices_written = model_totals.vertices + totals.vertices
        report.edges_written = model_totals.edges + totals.edges
        report.graph_requests = model_totals.requests + totals.requests
        report.graph_retries = model_totals.retries + totals.retries
        if totals.failed_rows:
            letters = (failed.join(predictions.select("uri", "bytes", "model", "run_id"), "uri")
                       .withColumn("stage", F.lit(STAGE_GRAPH)))
            _write_dead_letters(letters, report.output_uri, written_at)
            for reason, count in failed.groupBy("reason").count().collect():
                report.dead_lettered_by_reason[reason] = count
    finally:
        failed.unpersist()
