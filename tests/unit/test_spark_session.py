from dataclasses import replace

from imagegraph.config import load_config
from imagegraph.spark_session import spark_conf


def test_s3a_retries_come_from_the_s3_section():
    conf = spark_conf(load_config(None, {"s3.sdk_max_retries": 3, "s3.retry_limit": 4,
                                         "s3.retry_interval_s": 0.25,
                                         "s3.throttle_retry_limit": 6,
                                         "s3.throttle_retry_interval_s": 1.5}))
    assert {key: conf[f"spark.hadoop.fs.s3a.{key}"] for key in (
        "attempts.maximum", "retry.limit", "retry.interval", "retry.throttle.limit",
        "retry.throttle.interval")} == {
        "attempts.maximum": "3", "retry.limit": "4", "retry.interval": "250ms",
        "retry.throttle.limit": "6", "retry.throttle.interval": "1500ms"}


def test_s3a_retry_defaults_are_bounded():
    """Hadoop 3.3.4's own defaults: 20 SDK retries, then 20 throttling retries from 100 ms
    doubling each time (the last wait alone can exceed two days)."""
    conf = spark_conf(load_config(None))
    assert conf["spark.hadoop.fs.s3a.attempts.maximum"] == "5"
    assert conf["spark.hadoop.fs.s3a.retry.throttle.limit"] == "8"
    assert conf["spark.hadoop.fs.s3a.retry.throttle.interval"] == "500ms"
    assert conf["spark.hadoop.fs.s3a.retry.limit"] == "7"
    assert conf["spark.hadoop.fs.s3a.retry.interval"] == "500ms"


def worst_backoff_s(limit: str, interval: str) -> float:
    """s3a's longest total wait over `limit` retries: interval * 2**n * 1.5 before the n-th."""
    return sum(int(interval.removesuffix("ms")) / 1000 * 2 ** n * 1.5
               for n in range(1, int(limit) + 1))


def test_s3a_default_backoff_totals_stay_within_minutes():
    """With the defaults an operation fails its task after at most about 3 minutes of s3a's
    retry backoff and 6.5 of its throttling backoff (S3Config's docstring), not days."""
    conf = spark_conf(load_config(None))
    retry = worst_backoff_s(conf["spark.hadoop.fs.s3a.retry.limit"],
                            conf["spark.hadoop.fs.s3a.retry.interval"])
    throttle = worst_backoff_s(conf["spark.hadoop.fs.s3a.retry.throttle.limit"],
                               conf["spark.hadoop.fs.s3a.retry.throttle.interval"])
    assert (retry, throttle) == (190.5, 382.5)


def test_jobs_of_concurrent_driver_threads_share_the_executors_fairly():
    """A chunk's graph load and commit run beside the next chunk's classification; under
    Spark's default FIFO scheduler the commit's jobs would wait for every classification task
    to start."""
    assert spark_conf(load_config(None))["spark.scheduler.mode"] == "FAIR"


def test_the_background_pool_is_declared_in_the_allocation_file_unless_the_config_names_one():
    """Spark warns in every run that it created an undeclared pool; the file declares it."""
    from urllib.parse import urlsplit
    from xml.etree import ElementTree

    from imagegraph.infer.background import BACKGROUND_POOL

    allocation_file = spark_conf(load_config(None))["spark.scheduler.allocation.file"]
    assert allocation_file.startswith("file:///")  # not read from EMR's default file system
    pools = ElementTree.parse(urlsplit(allocation_file).path).getroot().findall("pool")
    assert [pool.get("name") for pool in pools] == [BACKGROUND_POOL]
    config = load_config(None)
    own = replace(config, spark=replace(config.spark, conf={
        "spark.scheduler.allocation.file": "s3://bucket/pools.xml"}))
    assert spark_conf(own)["spark.scheduler.allocation.file"] == "s3://bucket/pools.xml"
