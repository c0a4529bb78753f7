"""Loading a run's predictions into the graph from Spark: model and class elements from the
driver, then image vertices and edges over at most `graph.writers` connections at once, up to
`graph.connections_per_task` of them in each writing task, and never from every task slot of
the application: the next chunk's classification runs beside the load (see `infer.job`)
and needs at least one. A writing task holds its slot while it waits for the server's answers,
so the fewer tasks hold the connections, the more slots classify meanwhile.

Each writing task's outcome, a row per image it could not write (with the reason) and a row with
its writer's counts, is written as Parquet through Spark's output commit protocol, and the load's
figures are read back from what was committed: exactly one attempt of each task counts, however
often Spark runs a task or a stage again (accumulators updated inside a transformation would
count every attempt)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields, replace

from gremlin_python.process.graph_traversal import __
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from imagegraph.config import GraphConfig
from imagegraph.errors import JobError
from imagegraph.graph.connection import GremlinConnection
from imagegraph.graph.elements import CLASSIFIED_AS, model_elements
from imagegraph.graph.reads import read_graph
from imagegraph.graph.retry import Recovery
from imagegraph.graph.traversals import SOURCE, delete_probe
from imagegraph.graph.writer import (
    GraphWriter,
    RequestFailed,
    WriterStopped,
    WriteStats,
    chunks,
    write_partition,
)
from imagegraph.model.artifact import ModelMetadata

OUTCOME = StructType([StructField("uri", StringType(), True),
                      StructField("reason", StringType(), True),
                      StructField("stopped", StringType(), True),
                      *(StructField(f.name, LongType(), True) for f in fields(WriteStats))])
"""A writing task's outcome rows: (uri, reason) for each image not written; one row with a null
uri carrying the writer's counts (`WriteStats`) and why it stopped the run (null if it did
not)."""


@dataclass(frozen=True)
class GraphLoad:
    """What a load did, read back from its committed outcome: the totals, the (uri, reason) of
    the rows not written, and the distinct reasons writers stopped the run (empty: none did)."""

    totals: WriteStats
    failed: DataFrame
    stopped: tuple[str, ...]


def write_model(graph: GraphConfig, metadata: ModelMetadata, unknown: bool = False
                ) -> WriteStats:
    """Upsert the model vertex, its class vertices (with `unknown`, the `UNKNOWN` one too: see
    `elements.model_elements`) and has_class edges from the driver, with
    the traversal shapes the workers use, then send a drop() that drops nothing
    (`delete_probe`): the startup probe, which needs every permission the workers do. A
    failure raises `JobError` with
    one line (permissions, a reader endpoint, an engine without mergeV, ...); an endpoint that
    does not answer gets `graph.connect_timeout_s` of reconnects, not the failover budget."""
    probe = replace(graph, failover_budget_s=min(graph.failover_budget_s,
                                                 graph.connect_timeout_s))
    connection = GremlinConnection(probe)
    writer = GraphWriter(connection, probe, quiet=True)  # the JobError says what happened
    try:
        writer.write_elements(*model_elements(metadata, unknown))
        writer.run(delete_probe(metadata.model_id))
    except WriterStopped as stopped:
        if stopped.failure and stopped.failure.recovery is Recovery.RECONNECT:
            raise JobError(f"cannot reach the Gremlin endpoint {graph.endpoint}: "
                           f"{stopped.failure.message}") from None
        raise JobError(str(stopped)) from None
    except RequestFailed as failed:
        raise JobError(f"the startup write of model {metadata.tag} to {graph.endpoint} "
                       f"failed: {failed}") from None
    finally:
        connection.close()
    return writer.stats


def load_predictions(spark: SparkSession, graph: GraphConfig, predictions: DataFrame,
                     model_tag: str, run_id: str,
                     outcome_uri: str) -> GraphLoad:
    """Write `predictions` (rows of the predictions Parquet) into the graph, the writing tasks'
    outcome to `outcome_uri` (a new Parquet dataset), and read the load's figures back from it.

    `graph.max_upserts_per_s` is shared evenly by the connections that write at once.
    """
    partitions = predictions.rdd.getNumPartitions()
    tasks, connections = writer_layout(graph.writers, graph.connections_per_task, partitions,
                                       task_slots(spark))
    if partitions > tasks:
        predictions = predictions.coalesce(tasks)
    upserts_per_s = graph.max_upserts_per_s / tasks
    no_counts = (None,) * len(fields(WriteStats))

    def write(rows):
        writer = write_partition((row.asDict() for row in rows), graph, model_tag, run_id,
                                 upserts_per_s, connections)
        for uri, reason in writer.failed.items():
            yield (uri, reason, None, *no_counts)
        yield (None, None, writer.stopped or None, *astuple(writer.stats))

    spark.createDataFrame(predictions.rdd.mapPartitions(write), OUTCOME).write.parquet(outcome_uri)
    outcome = spark.read.parquet(outcome_uri)
    counts = outcome.where(F.col("uri").isNull())
    summary = counts.agg(*(F.coalesce(F.sum(f.name), F.lit(0)).alias(f.name)
                           for f in fields(WriteStats)),
                         F.collect_set("stopped").alias("stopped")).first()
    totals = WriteStats(**{f.name: int(summary[f.name]) for f in fields(WriteStats)})
    failed = outcome.where(F.col("uri").isNotNull()).select("uri", "reason")
    return GraphLoad(totals, failed, tuple(sorted(summary["stopped"])))


def task_slots(spark: SparkSession) -> int:
    """Tasks the application's executors run at once now: their cores over `spark.task.cpus`
    (Spark's default parallelism counts the cores; under dynamic allocation, those of the
    executors registered now)."""
    task_cpus = int(spark.conf.get("spark.task.cpus", "1"))
    return max(1, spark.sparkContext.defaultParallelism // task_cpus)


def writer_layout(writers: int, connections_per_task: int, partitions: int,
                  slots: int) -> tuple[int, int]:
    """(tasks, connections each) of a load of `partitions` partitions: `writers` connections
    (`graph.writers`) in as few tasks as `connections_per_task` allows, but never more tasks
    than `partitions` nor than all `slots` (task slots) but one, so that a load's tasks, which
    hold their slots until their last request returns, never starve the classification running
    beside it; never more connections than `writers` in all."""
    tasks = max(1, min(partitions, -(-writers // connections_per_task), slots - 1))
    return tasks, max(1, min(connections_per_task, writers // tasks))


def count_run_images(graph: GraphConfig, run_id: str, uris: Iterable[str]) -> int:
    """Image vertices among `uris` (the images the run committed) with a classified_as edge
    whose `run_id` is `run_id` (the edges are the run's model's own: another model's run
    never changes them): what a run wrote, read back a request per
    `graph.records_per_request` ids, so that no request's cost grows with the run (one count()
    over a run of 10^7 images would outlast Neptune's query timeout)."""
    requests = (SOURCE.V(*batch).has_label("image")
                .where(__.out_e(CLASSIFIED_AS).has("run_id", run_id)).count()
                for batch in chunks(uris, graph.records_per_request))
    return sum(results[0] for results in read_graph(graph, requests))
