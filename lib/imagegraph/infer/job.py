"""The inference run: select objects -> skip what is done -> in chunks: read and classify,
upsert into the graph, commit to Parquet -> read back and reconcile -> report.

Chunks are pipelined: while the main thread classifies chunk k+1, a background thread writes
chunk k to the graph and commits it (`background.BackgroundJobs`), so a backfill's graph writes
overlap its inference instead of following it. Commits stay in chunk order, one at a time.

Everything a later step reads is computed once into the run's staging area (see
`outputs.staging_uri`): the selected objects, those left to do, each chunk's classification
results and its graph outcome. Spark never rebuilds them by listing or reading S3 again, so the
counts, the graph write and both commits of a chunk see the same outcome for every object even
when executors are lost. Each chunk is committed (predictions/ and dead_letter/ appended) only
after its graph writes, with the endpoint they went to; an object visible in predictions/ is
therefore in that graph, and `--resume` with that endpoint skips it. Each dead letter records
the object's attempt it ended; `--resume` also skips an object out of attempts (see
`imagegraph.dead_letters`). `run_inference` is what
`jobs/infer.py` calls once arguments and configuration are parsed.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from pyspark import Broadcast
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from imagegraph.config import Config
from imagegraph.errors import JobError, cluster_failure
from imagegraph.graph.bulk_load import bulk_load_predictions
from imagegraph.graph.connection import with_resolved_region
from imagegraph.graph.elements import UNKNOWN
from imagegraph.graph.load import count_run_images, load_predictions, write_model
from imagegraph.infer.background import BackgroundJobs
from imagegraph.infer.classify import STATUS_OK, InferenceSettings, classify_images
from imagegraph.infer.precision import choose_precision
from imagegraph.logs import log_context
from imagegraph.model.artifact import ModelMetadata
from imagegraph.model.store import read_model_artifact
from imagegraph.model.temperature import TEMPERATURE_METRIC
from imagegraph.runs.figures import RunFigures
from imagegraph.runs.ids import new_run_id
from imagegraph.runs.lease import RunLease, lease_holders, take_lease
from imagegraph.runs.metrics import run_metrics
from imagegraph.runs.progress import ProgressCounters, ProgressLogger
from imagegraph.runs.report import FAILED, SUCCEEDED, RunReport
from imagegraph.storage import hadoop_fs
from imagegraph.storage.object_reader import ReaderSettings
from imagegraph.storage.outputs import (
    DEAD_LETTER_DIR,
    PREDICTIONS_DIR,
    STAGING_DIR,
    committed_rows,
    finished_uris,
    remove_staging,
    report_uri,
    run_rows_uri,
    split_done,
    split_out_of_attempts,
    staged_runs,
    staging_uri,
    with_attempts,
    write_dead_letters,
    write_predictions,
    write_report,
)
from imagegraph.storage.selection import InputSource, Shard, select_objects, without_modified

log = logging.getLogger(__name__)

STAGE_GRAPH = "graph"


@dataclass(frozen=True)
class _Run:
    """What every chunk of a run shares."""

    config: Config
    metadata: ModelMetadata
    model_files: Broadcast
    settings: InferenceSettings
    counters: ProgressCounters
    report: RunReport
    started_at: datetime
    staging_uri: str
    lease: RunLease
    figures: RunFigures


def run_inference(spark: SparkSession, config: Config, source: InputSource, model_uri: str,
                  output_uri: str, shard: Shard | None = None,
                  resume: bool = False) -> RunReport:
    """Classify the objects of `source` (in `shard`, when given) with the model at
    `model_uri`, upsert the results into the graph when `config.graph.enabled`, and record
    them under `output_uri` (see `outputs`); with `resume`, skip objects earlier runs of this
    model wrote there for the same graph (`outputs.finished_uris`) and those out of attempts
    (`outputs.split_out_of_attempts`). The report is written to
    `<output>/_reports/<run_id>.json`, `status` `succeeded`, its picture beside it
    (`runs.figures`); whatever stops the run once it has planned its chunks, marked `failed`
    with the stop line and what it committed before (see `RunReport`)."""
    started = time.monotonic()
    started_at = datetime.now(timezone.utc)
    output_uri = output_uri.rstrip("/")
    if config.graph.enabled:
        config = replace(config, graph=with_resolved_region(config.graph))
    hadoop_fs.exists(spark, output_uri)  # a missing bucket or unreachable store stops us here
    metadata, model_files = read_model_artifact(spark, model_uri, config.inference.embedding)
    if config.inference.embedding and not metadata.embedding_centre:
        log.warning("model %s has no embedding centre (trained before training measured one): "
                    "its embeddings are written uncentred, as before, and similar_to edges "
                    "join unrelated images more often (docs/LINKING.md)", metadata.tag)
    if config.graph.enabled and config.inference.min_score and UNKNOWN in metadata.classes:
        raise JobError(f"model {metadata.tag} has a class named {UNKNOWN!r}, the graph's class "
                       f"of images under inference.min_score: rename the class, or run "
                       f"without the threshold (inference.min_score 0)")
    run_id = new_run_id(started_at)
    with log_context(run_id=run_id, **({"shard": str(shard)} if shard else {})):
        report = RunReport(run_id=run_id, source=str(source), output_uri=output_uri,
                           model=metadata.tag, shard=str(shard) if shard else "", resume=resume,
                           started_at=started_at.isoformat(), graph_enabled=config.graph.enabled,
                           graph_endpoint=config.graph.endpoint if config.graph.enabled else "",
                           report_uri=report_uri(output_uri, run_id))
        figures = RunFigures(report, run_metrics(config.metrics, config.s3, report.run_id,
                                                 report.shard, report.model))
        if config.graph.enabled:  # the startup probe: writes as the workers will, or stops here
            _add_model_totals(report, config, metadata)

        # one run per (output, model, shard) at a time, from before what is done is read
        with take_lease(output_uri, metadata.tag, shard, report.run_id, config.run.lease_ttl_s,
                        config.s3) as lease:
            _remove_stale_staging(spark, config, report)
            try:
                _run_chunks(spark, config, source, shard, resume, metadata, model_files, report,
                            started_at, started, lease, figures)
            except BaseException as exc:
                report.elapsed_s = time.monotonic() - started
                if report.chunks:  # it had planned its chunks: one may be committed
                    _write_failed_report(spark, report, exc)
                raise
            finally:  # succeeded or failed; a killed run's is left to a later run
                remove_staging(spark, staging_uri(output_uri, report.run_id))
        report.status = SUCCEEDED
        report.elapsed_s = time.monotonic() - started
        figures.finish(spark)
        write_report(spark, report.report_uri, report.to_dict())
        return report


def _run_chunks(spark: SparkSession, config: Config, source: InputSource, shard: Shard | None,
                resume: bool, metadata: ModelMetadata, model_files: dict[str, bytes],
                report: RunReport, started_at: datetime, started: float, lease: RunLease,
                figures: RunFigures) -> None:
    """The run under its lease: stage the selection, classify and commit chunk by chunk,
    read back into `report`; `started` is the run's start on `time.monotonic`."""
    staging = staging_uri(report.output_uri, report.run_id)
    todo = _stage_selection(spark, config, source, shard, resume, staging, report)
    settings = _settings(spark, config, metadata)
    precision = choose_precision(spark, config.inference, metadata, model_files, todo,
                                 settings)
    precision.record(report)
    report.temperature, report.min_score = settings.temperature, config.inference.min_score
    broadcast = spark.sparkContext.broadcast(precision.model_files)
    try:
        remaining = todo.count()
        report.chunks = max(1, math.ceil(remaining / config.run.objects_per_chunk))
        log.info("run %s: %d objects selected from %s%s, %d done before, %d to do in %d "
                 "chunk(s), model %s", report.run_id, report.listed, source,
                 f" (shard {shard})" if shard else "", report.skipped_done, remaining,
                 report.chunks, metadata.tag)
        run = _Run(config, metadata, broadcast,
                   replace(settings, precision=precision.precision),
                   ProgressCounters(spark.sparkContext), report, started_at, staging, lease,
                   figures)
        with ProgressLogger(run.counters, remaining, config.run.progress_interval_s, started), \
                BackgroundJobs(spark.sparkContext, report.run_id) as commits:
            for index in range(report.chunks if remaining else 0):
                chunk = todo if report.chunks == 1 else \
                    todo.where(F.pmod(F.xxhash64("uri"), F.lit(report.chunks)) == index)
                with log_context(chunk=index + 1):  # as the chunk's log lines number it
                    staged = commits.run_in_foreground(_classify_chunk, spark, run, chunk, index)
                    commits.submit(_commit_chunk, spark, run, staged)
        report.model_ran_s = run.counters.model_ran_s.value
        report.model_waited_s = run.counters.model_waited_s.value
    finally:
        broadcast.unpersist()
    _read_back(spark, config, report)


def _remove_stale_staging(spark: SparkSession, config: Config, report: RunReport) -> None:
    """Remove the staging areas under the run's output of earlier inference runs that no
    lease names (killed, or their removal failed), with one log line; a failure to is logged,
    and the run goes on. Such a run never commits again (`lease_holders`); a run takes its
    lease before it stages anything, so the areas are listed before the leases are read:
    a run that starts meanwhile is either not listed or holds a lease by then."""
    try:
        staged = staged_runs(spark, report.output_uri)
        holders = lease_holders(report.output_uri, config.s3) if staged else set()
        stale = [run_id for run_id in staged
                 if run_id not in holders and run_id != report.run_id]
    except Exception as exc:  # a housekeeping step: never what stops a run
        log.warning("run %s: could not look for staging areas of earlier runs: %s: %s",
                    report.run_id, type(exc).__name__, exc)
        return
    removed = [run_id for run_id in stale
               if remove_staging(spark, staging_uri(report.output_uri, run_id))]
    if removed:
        log.info("run %s: removed the staging areas of %d earlier run(s) that no lease names "
                 "under %s/%s: %s", report.run_id, len(removed), report.output_uri,
                 STAGING_DIR, ", ".join(removed))


def _write_failed_report(spark: SparkSession, report: RunReport, error: BaseException) -> None:
    """Write `report` marked failed, `stop` the first line of `error`, with the rows the run
    committed before it, read back; a failure to do so is logged, the run's own error is the
    one raised."""
    line = (str(error) if isinstance(error, JobError)
            else cluster_failure(error) or f"{type(error).__name__}: {error}")
    report.status, report.stop = FAILED, (line.strip().splitlines() or [type(error).__name__])[0]
    try:
        report.committed_predictions, report.committed_dead_letters = committed_rows(
            spark, report.output_uri, report.run_id)
        write_report(spark, report.report_uri, report.to_dict())
        log.debug("run %s: failed; report at %s", report.run_id, report.report_uri)
    except Exception as exc:  # the store or Spark itself may be what failed
        log.warning("run %s: could not write its failed report: %s: %s", report.run_id,
                    type(exc).__name__, exc)


def _stage_selection(spark: SparkSession, config: Config, source: InputSource,
                     shard: Shard | None, resume: bool, staging: str,
                     report: RunReport) -> DataFrame:
    """List the run's objects once into `staging`, and those left to do (with `resume`, less
    those done) with their earlier attempts (`outputs.with_attempts`); count the listed, the
    rows left out for want of a modified time the filters need, and (joined with earlier
    output, not subtracted) the skipped into `report`.
    Returns the objects to do, read from the staged copy; `JobError` when a source row names
    no object."""
    select_objects(spark, source, config.input, config.s3, shard) \
        .write.parquet(f"{staging}/selected")
    selected = spark.read.parquet(f"{staging}/selected")  # listed once, never again
    untimed = without_modified(config.input)
    listed, unnamed, report.without_modified = selected.agg(
        F.count(F.lit(1)), F.count(F.when(F.col("uri").isNull(), 1)),
        F.count(F.when(untimed, 1))).first()
    if unnamed:  # a manifest row without uri, bucket or key: no object to read or dead-letter
        raise JobError(f"{source}: {unnamed} row(s) name no object (no uri, or no bucket or "
                       f"key); fix or remove them and run again")
    if report.without_modified:
        log.warning("run %s: %d row(s) of %s have no (parseable) modified time, so the "
                    "modified-after/-before filters cannot select them; left out, counted in "
                    "the report (without_modified)", report.run_id, report.without_modified,
                    source)
        selected = selected.where(~untimed)
    report.listed = listed - report.without_modified
    todo = with_attempts(spark, report.output_uri, report.model, selected)
    if resume:
        finished, todo = split_done(todo, finished_uris(spark, report.output_uri, report.model,
                                                        report.graph_endpoint))
        out_of_attempts, todo = split_out_of_attempts(todo, config.inference.max_attempts)
        report.skipped_out_of_attempts = out_of_attempts.count()
        report.skipped_done = finished.count() + report.skipped_out_of_attempts
    todo.write.parquet(f"{staging}/todo")
    return spark.read.parquet(f"{staging}/todo")


def _settings(spark: SparkSession, config: Config, metadata: ModelMetadata) -> InferenceSettings:
    return InferenceSettings(
        top_k=min(config.inference.top_k, len(metadata.classes)),
        batch_size=config.inference.batch_size,
        max_image_pixels=config.inference.max_image_pixels,
        threads=int(spark.conf.get("spark.task.cpus", "1")),
        reader=ReaderSettings.from_config(config.s3, config.input.read_threads,
                                          config.inference.max_image_bytes),
        embedding=config.inference.embedding,
        runtime=config.inference.runtime,
        temperature=_temperature(config, metadata),
    )


def _temperature(config: Config, metadata: ModelMetadata) -> float:
    """The temperature the run divides the model's logits by: the one training fitted
    (`metadata.json`'s metrics) with `inference.calibrated`, else 1.0; a model without one is
    scored as it gives them, said in one log line."""
    if not config.inference.calibrated:
        return 1.0
    fitted = metadata.metrics.get(TEMPERATURE_METRIC)
    if fitted is None:
        log.info("model %s has no fitted temperature (no %r in the metrics of its "
                 "metadata.json): its scores are written as the model gives them (T = 1)",
                 metadata.tag, TEMPERATURE_METRIC)
        return 1.0
    return float(fitted)


def _add_model_totals(report: RunReport, config: Config, metadata: ModelMetadata) -> None:
    """Upsert the model and class elements (from the driver) and count them; `JobError` when
    the graph refuses them (see `write_model`)."""
    totals = write_model(config.graph, metadata, unknown=config.inference.min_score > 0)
    report.vertices_written += totals.vertices
    report.edges_written += totals.edges
    report.graph_requests += totals.requests
    report.graph_retries += totals.retries


@dataclass(frozen=True)
class _StagedChunk:
    """A classified chunk: its index, its staging directory (`results` in it) and its
    objects by (status, reason, unknown)."""

    index: int
    uri: str
    counts: tuple[tuple[str, str, bool, int], ...]


def _classify_chunk(spark: SparkSession, run: _Run, objects: DataFrame,
                    index: int) -> _StagedChunk:
    """Classify `objects` into the staging area; the main thread's work."""
    staged = f"{run.staging_uri}/chunk={index}"
    count = objects.count()
    partitions = run.config.inference.partitions or max(
        spark.sparkContext.defaultParallelism,
        math.ceil(count / run.config.inference.objects_per_partition))
    (objects.repartition(partitions)
     .select(classify_images(F.col("uri"), F.col("size"), F.col("etag"), run.model_files,
                             run.metadata, run.settings, run.counters).alias("c"),
             "attempts_before")
     .select("c.*", "attempts_before")
     .withColumn("model", F.lit(run.metadata.tag))
     .withColumn("run_id", F.lit(run.report.run_id))
     .withColumn("precision", F.lit(run.settings.precision))
     .withColumn("temperature", F.lit(run.settings.temperature))
     .withColumn("min_score", F.lit(run.config.inference.min_score))
     .withColumn("unknown", F.element_at("scores", 1) < F.col("min_score"))
     .withColumn("inferred_at", F.lit(run.started_at))
     .write.parquet(f"{staged}/results"))
    counts = (spark.read.parquet(f"{staged}/results")
              .groupBy("status", "reason", F.coalesce("unknown", F.lit(False)).alias("unknown"))
              .count())
    return _StagedChunk(index, staged, tuple((row["status"], row["reason"], row["unknown"],
                                              row["count"]) for row in counts.collect()))


def _commit_chunk(spark: SparkSession, run: _Run, chunk: _StagedChunk) -> None:
    """Count a classified chunk into the report, write its classified objects to the graph,
    then commit it: predictions/ for those written, dead_letter/ for the rest. The background
    thread's work; the only writer of the report while chunks run. `JobError` (the lease's
    line) before the chunk is counted and before each of its commits when the run no longer
    holds its lease."""
    config, report = run.config, run.report
    # a run whose lease may have expired (and been taken over) must not count, write or
    # commit a chunk: checked before each write too, as each can take long
    run.lease.ensure_held()
    classified = sum(count for status, _, _, count in chunk.counts if status == STATUS_OK)
    total = sum(count for _, _, _, count in chunk.counts)
    report.classified += classified
    report.unknown += sum(count for status, _, unknown, count in chunk.counts
                          if status == STATUS_OK and unknown)
    for status, reason, _, count in chunk.counts:
        if status != STATUS_OK:
            _count_dead_letters(report, reason, count)
    log.info("run %s chunk %d/%d: %d objects, %d classified, %d dead-lettered",
             report.run_id, chunk.index + 1, report.chunks, total, classified,
             total - classified)
    results = spark.read.parquet(f"{chunk.uri}/results")
    predictions = (results.where(F.col("status") == STATUS_OK)
                   .drop("status", "stage", "reason", "attempts_before",
                         *([] if run.settings.embedding else ["embedding"])))
    dead_letters = (results.where(F.col("status") != STATUS_OK)
                    .select("uri", "etag", "version_id", "stage", "reason", _attempt(), "bytes",
                            "model", "run_id"))
    if config.graph.enabled and classified:
        failed = _write_graph(spark, run, predictions, chunk.uri)
        dead_letters = dead_letters.unionByName(
            failed.join(results.select("uri", "etag", "version_id", "bytes", "model",
                                       "run_id", "attempts_before"), "uri")
            .select("uri", "etag", "version_id", F.lit(STAGE_GRAPH).alias("stage"), "reason",
                    _attempt(), "bytes", "model", "run_id"))
        predictions = predictions.join(failed, "uri", "left_anti")
    run.lease.ensure_held()
    write_predictions(predictions, report.output_uri, report.run_id, report.graph_endpoint)
    run.lease.ensure_held()
    write_dead_letters(dead_letters, report.output_uri, report.run_id, run.started_at)
    run.figures.chunk_committed(chunk.index)


def _attempt() -> Column:
    """A dead letter's `attempt`: the object's dead letters before this run's, plus one."""
    return (F.col("attempts_before") + 1).cast("int").alias("attempt")


def _count_dead_letters(report: RunReport, reason: str, count: int) -> None:
    report.dead_lettered_by_reason[reason] = report.dead_lettered_by_reason.get(reason, 0) + count


def _write_graph(spark: SparkSession, run: _Run, predictions: DataFrame,
                 chunk_uri: str) -> DataFrame:
    """Every prediction's vertex and edges (the load's outcome under `<chunk_uri>/graph`, with
    `graph.load: bulk` its CSV under `<chunk_uri>/bulk`); returns the (uri, reason) of the rows
    that could not be written, counted in the report. Raises `JobError` when a writer stopped
    the run (the chunk is then not committed, and `--resume` does it again)."""
    report = run.report
    if run.config.graph.load == "bulk":
        load = bulk_load_predictions(spark, run.config.graph, predictions, run.metadata.tag,
                                     report.run_id, f"{chunk_uri}/graph", f"{chunk_uri}/bulk")
    else:
        load = load_predictions(spark, run.config.graph, predictions, run.metadata.tag,
                                report.run_id, f"{chunk_uri}/graph")
    if load.stopped:
        raise JobError("; ".join(load.stopped))
    totals = load.totals
    report.graph_written += totals.rows_written
    report.graph_failed += totals.failed_rows
    report.vertices_written += totals.vertices
    report.edges_written += totals.edges
    report.graph_requests += totals.requests
    report.graph_retries += totals.retries
    if totals.failed_rows:
        for reason, count in load.failed.groupBy("reason").count().collect():
            _count_dead_letters(report, reason, count)
    return load.failed


def _read_back(spark: SparkSession, config: Config, report: RunReport) -> None:
    """Fill in the report's read-back terms: the rows the run committed and, with the graph on,
    the image vertices among them (predictions and dead letters) that carry its run id."""
    report.committed_predictions, report.committed_dead_letters = committed_rows(
        spark, report.output_uri, report.run_id)
    if config.graph.enabled:
        datasets = [run_rows_uri(report.output_uri, name, report.run_id)
                    for name, rows in ((PREDICTIONS_DIR, report.committed_predictions),
                                       (DEAD_LETTER_DIR, report.committed_dead_letters))
                    if rows]
        uris = (spark.read.schema("uri string").parquet(*datasets).distinct().toLocalIterator()
                if datasets else iter(()))
        report.graph_images = count_run_images(config.graph, report.run_id,
                                               (row.uri for row in uris))
