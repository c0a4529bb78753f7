"""Loading a run's predictions into the graph from Spark: model and class elements from the
driver, then image vertices and edges from at most `graph.max_concurrent_writers` partitions at
once, counted with accumulators; rows that could not be written come back as a DataFrame."""
from __future__ import annotations

from dataclasses import fields, replace
from datetime import datetime

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType, StructField, StructType

from imagegraph.config import GraphConfig
from imagegraph.graph.connection import GremlinConnection
from imagegraph.graph.elements import model_elements
from imagegraph.graph.retry import Recovery
from imagegraph.errors import JobError
from imagegraph.graph.writer import (GraphWriter, RequestFailed, WriteStats, WriterStopped,
                                     write_partition)
from imagegraph.model_artifact import ModelMetadata

FAILED_ROW = StructType([StructField("uri", StringType(), False),
                         StructField("reason", StringType(), False)])


class _Accumulators:
    """One Spark accumulator per count of `WriteStats`."""

    def __init__(self, spark: SparkSession):
        self._counters = {f.name: spark.sparkContext.accumulator(0) for f in fields(WriteStats)}

    def add(self, stats: WriteStats) -> None:
        for name, counter in self._counters.items():
            counter.add(getattr(stats, name))

    def totals(self) -> WriteStats:
        return WriteStats(**{name: counter.value for name, counter in self._counters.items()})


def write_model(graph: GraphConfig, metadata: ModelMetadata) -> WriteStats:
    """Upsert the model vertex, its class vertices and has_class edges from the driver, with
    the traversal shapes the workers use: the startup probe. A failure raises `JobError` with
    one line (permissions, a reader endpoint, an engine without mergeV, ...); an endpoint that
    does not answer gets `graph.connect_timeout_s` of reconnects, not the failover budget."""
    probe = replace(graph, failover_budget_s=min(graph.failover_budget_s,
                                                 graph.connect_timeout_s))
    connection = GremlinConnection(probe)
    writer = GraphWriter(connection, probe)
    try:
        writer.write_elements(*model_elements(metadata))
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
                     model_tag: str, run_id: str, written_at: datetime
                     ) -> tuple[WriteStats, DataFrame]:
    """Write `predictions` (rows of the predictions Parquet) into the graph.

    Returns the totals and a persisted DataFrame of (uri, reason) for rows not written;
    the caller unpersists it. `graph.max_upserts_per_s` is shared evenly by the partitions
    that write at once.
    """
    writers = predictions.rdd.getNumPartitions()
    if graph.max_concurrent_writers and writers > graph.max_concurrent_writers:
        writers = graph.max_concurrent_writers
        predictions = predictions.coalesce(writers)
    upserts_per_s = graph.max_upserts_per_s / max(1, writers)
    counters = _Accumulators(spark)

    def write(rows):
        writer = write_partition((row.asDict() for row in rows), graph, model_tag, run_id,
                                 written_at, upserts_per_s)
        counters.add(writer.stats)
        return iter(writer.failed.items())

    failed = (spark.createDataFrame(predictions.rdd.mapPartitions(write), FAILED_ROW)
              .persist(StorageLevel.MEMORY_AND_DISK))
    failed.count()  # the one action that writes; later reads come from the persisted rows
    return counters.totals(), failed
