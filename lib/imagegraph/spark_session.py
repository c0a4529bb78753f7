"""The SparkSession for a job, with the s3a connector pointed at the configured S3."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from imagegraph.config import Config

log = logging.getLogger(__name__)
_S3A_CREDENTIALS = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
FAIR_SCHEDULER_POOLS = Path(__file__).with_name("fairscheduler.xml")
"""Declares `background.BACKGROUND_POOL`; a file: URI, as a bare path would be read from the
cluster's default file system (HDFS on EMR)."""


def spark_conf(config: Config) -> dict[str, str]:
    """The Spark settings a job needs: `spark.conf` from the config plus s3a, Arrow and
    scheduler settings."""
    conf = {key: str(value) for key, value in config.spark.conf.items()}
    conf["spark.sql.execution.arrow.maxRecordsPerBatch"] = str(config.inference.arrow_batch_size)
    conf["spark.scheduler.mode"] = "FAIR"  # a chunk's graph load beside the next's inference
    conf.setdefault("spark.scheduler.allocation.file", FAIR_SCHEDULER_POOLS.as_uri())
    s3 = config.s3
    if s3.endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = s3.endpoint
        conf["spark.hadoop.fs.s3a.endpoint.region"] = s3.region
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(
            s3.endpoint.startswith("https://")).lower()
    conf["spark.hadoop.fs.s3a.path.style.access"] = str(s3.path_style_access).lower()
    conf["spark.hadoop.fs.s3a.attempts.maximum"] = str(s3.sdk_max_retries)
    conf["spark.hadoop.fs.s3a.retry.limit"] = str(s3.retry_limit)
    conf["spark.hadoop.fs.s3a.retry.interval"] = _milliseconds(s3.retry_interval_s)
    conf["spark.hadoop.fs.s3a.retry.throttle.limit"] = str(s3.throttle_retry_limit)
    conf["spark.hadoop.fs.s3a.retry.throttle.interval"] = _milliseconds(
        s3.throttle_retry_interval_s)
    if s3.access_key:
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = _S3A_CREDENTIALS
        conf["spark.hadoop.fs.s3a.access.key"] = s3.access_key
        conf["spark.hadoop.fs.s3a.secret.key"] = s3.secret_key
    return conf


def _milliseconds(seconds: float) -> str:
    """A Hadoop time duration: 0.5 -> '500ms'."""
    return f"{round(seconds * 1000)}ms"


def _under_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands the Python driver its gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(config: Config) -> SparkSession:
    """Get or create the session. Under spark-submit the master comes from spark-submit; run
    from plain Python (tests, notebooks) it defaults to `local[*]` with this interpreter as the
    workers' Python. In local mode with the Spark UI on, logs one line with its address."""
    builder = SparkSession.builder.appName(config.spark.app_name)
    for key, value in spark_conf(config).items():
        builder = builder.config(key, value)
    master = config.spark.conf.get("spark.master", "")
    if not master and _under_spark_submit():
        # Attach to spark-submit's JVM first: a SparkConf made before that is an empty Python
        # dict, whose missing spark.master would make this `local[*]` even on YARN.
        SparkContext._ensure_initialized()
        master = SparkConf().get("spark.master", "")
    if not master:
        master = "local[*]"
        builder = builder.master(master)
    if master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(config.spark.log_level)
    if master.startswith("local") and spark.sparkContext.uiWebUrl:
        log.info("Spark UI at %s", spark.sparkContext.uiWebUrl)
    return spark
