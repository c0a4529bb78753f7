"""Data-parallel training on N Spark executors: one barrier stage of N tasks, each running
`train.loop.train_model` under `tf.distribute.MultiWorkerMirroredStrategy` on its own shard
of the petastorm training data.

    driver: a barrier stage of N tasks (Spark starts all N at once, or none)
    task i: a free port -> allGather of every task's host:port -> TF_CONFIG (worker i of N)
            -> a fresh Python process trains (TensorFlow's collective ops are set up once per
            process, so a reused Spark Python worker could not train twice) -> its result
    driver: the chief's (task 0's) model, and how many images each worker stepped over

The plumbing is written here rather than taken from spark-tensorflow-distributor 1.0.0 (2020,
unmaintained: under TensorFlow 2.19 its documented `MultiWorkerMirroredStrategy` + `Model.fit`
usage fails with Keras 3, and it trains in the Spark worker's own process) or TensorFlowOnSpark
2.2.5 (2022; built around TensorFlow 1 style servers and `tf.keras.experimental` APIs that
TensorFlow 2.19 no longer has).
"""
from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
from contextlib import closing

from pyspark.sql import SparkSession

from imagegraph.errors import JobError
from imagegraph.logs import TEXT_FORMAT
from imagegraph.train.loop import TrainedModel, TrainingPlan, train_model

_PAYLOAD, _RESULT = "payload.pickle", "result.pickle"


def train_on_executors(spark: SparkSession, plan: TrainingPlan, train_data, holdout_data,
                       workers: int) -> list[TrainedModel]:
    """Train on `workers` Spark tasks at once; the results in worker order (the chief's, first,
    holds the model). `plan.weights`, a local file on the driver, is shipped with
    `SparkContext.addFile`. Raises `JobError` under dynamic allocation, which Spark refuses
    for barrier stages; with too few task slots Spark itself fails the stage after waiting
    (`spark.scheduler.barrier.maxConcurrentTasksCheck.*`)."""
    from pyspark import BarrierTaskContext, SparkFiles

    context = spark.sparkContext
    if context.getConf().get("spark.dynamicAllocation.enabled", "false").lower() == "true":
        raise JobError(f"training.workers is {workers}: a barrier stage, which Spark refuses "
                       "under dynamic allocation; run with --conf "
                       "spark.dynamicAllocation.enabled=false and at least "
                       f"{workers} task slots (spark.executor.instances x cores / task.cpus)")
    weights_name = None
    if plan.weights not in (None, "imagenet"):
        context.addFile(plan.weights)
        weights_name = os.path.basename(plan.weights)

    def run_worker(_):
        barrier = BarrierTaskContext.get()
        rank = barrier.partitionId()
        host = barrier.getTaskInfos()[rank].address.split(":")[0]
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        cluster = barrier.allGather(f"{host}:{port}")
        worker_plan = plan if weights_name is None else \
            _with_weights(plan, SparkFiles.get(weights_name))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
               "TF_CONFIG": json.dumps({"cluster": {"worker": cluster},
                                        "task": {"type": "worker", "index": rank}})}
        with tempfile.TemporaryDirectory(prefix="imagegraph-worker-") as directory:
            with open(os.path.join(directory, _PAYLOAD), "wb") as handle:
                pickle.dump((worker_plan, train_data, holdout_data, rank, len(cluster)), handle)
            subprocess.run([sys.executable, "-m", "imagegraph.train.distributed",
                            directory], env=env, check=True)
            with open(os.path.join(directory, _RESULT), "rb") as handle:
                yield handle.read()

    results = (context.parallelize(range(workers), workers).barrier()
               .mapPartitions(run_worker).collect())
    return [pickle.loads(result) for result in results]


def _with_weights(plan: TrainingPlan, path: str) -> TrainingPlan:
    import dataclasses

    return dataclasses.replace(plan, weights=path)


def _worker_main(directory: str) -> None:
    with open(os.path.join(directory, _PAYLOAD), "rb") as handle:
        plan, train_data, holdout_data, rank, workers = pickle.load(handle)
    result = train_model(plan, train_data, holdout_data, worker=rank, workers=workers)
    with open(os.path.join(directory, _RESULT), "wb") as handle:
        pickle.dump(result, handle)


if __name__ == "__main__":
    import logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=TEXT_FORMAT)
    _worker_main(sys.argv[1])
