"""One set of real servers, one SparkSession and one trained model per test session.

The servers run on free ports in a temporary run directory, so a `make services-up` or a demo
running beside the tests does not collide with them.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import sample_images
import services
from neptune_loader import LoaderSettings, NeptuneLoader
from s3_objects import put_objects, s3_client
from toxiproxy_client import Proxy, ToxiproxyClient

from imagegraph.config import load_config
from imagegraph.graph.connection import remote_traversal
from imagegraph.spark_session import get_spark
from imagegraph.train.job import run_training

BUCKET = "imagegraph-test"
DIGITS_USED = 240          # every 6th held out: 40 held-out digits, 200 to train on
MODEL_URI = f"s3a://{BUCKET}/models/digits/v1"
LOCAL_YAML = str(services.ROOT / "conf" / "local.yaml")


@pytest.fixture(scope="session")
def endpoints(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("services")
    started = services.start(services.Endpoints(services.free_port(), services.free_port(),
                                                services.free_port()), run_dir)
    yield started
    services.stop(run_dir)


@pytest.fixture(scope="session")
def config(endpoints):
    """conf/local.yaml pointed at the test servers, with Spark on two local cores; a failed
    task is tried up to 4 times (local mode's default is once)."""
    env = endpoints.env()
    local_spark_conf = load_config(LOCAL_YAML).spark.conf
    return load_config(LOCAL_YAML, {
        "s3.endpoint": env["S3_ENDPOINT"], "s3.access_key": env["AWS_ACCESS_KEY_ID"],
        "s3.secret_key": env["AWS_SECRET_ACCESS_KEY"], "graph.endpoint": env["GREMLIN_ENDPOINT"],
        "spark.conf": {**local_spark_conf, "spark.master": "local[2,4]"},
        "training.epochs": 4, "training.model_version": "v1", "training.model_name": "digits",
    })


@pytest.fixture(scope="session")
def spark(config):
    session = get_spark(config)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def s3(endpoints):
    env = endpoints.env()
    return s3_client(env["S3_ENDPOINT"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture(scope="session")
def dataset(s3):
    """Puts the test images into S3; returns {'train': {...}, 'incoming': {...}} of keys."""
    train, held_out = sample_images.digit_images(limit=DIGITS_USED)
    incoming = {**{f"digits/{k}": v for k, v in held_out.items()},
                **sample_images.photo_images(), **sample_images.corrupt_image()}
    put_objects(s3, BUCKET, "train/", train)
    put_objects(s3, BUCKET, "incoming/", incoming)
    return {"train": train, "incoming": incoming}


@pytest.fixture(scope="session")
def trained_model(spark, config, dataset):
    """The session's model, trained with petastorm's cache in the local S3 (as on a cluster)."""
    training = replace(config.training, cache_url=f"s3a://{BUCKET}/petastorm")
    return run_training(spark, replace(config, training=training), f"s3a://{BUCKET}/train/",
                        MODEL_URI)


@pytest.fixture(scope="module")
def graph(config):
    """A traversal source on a graph emptied at the start of each test module."""
    with remote_traversal(config.graph) as g:
        g.V().drop().iterate()
        yield g


@pytest.fixture(scope="session")
def neptune_loader(endpoints) -> NeptuneLoader:
    """The bulk loader's stand-in (dev/neptune_loader.py) on a free port, reading the session's
    S3 and loading into its Gremlin Server."""
    env = endpoints.env()
    with NeptuneLoader(LoaderSettings(env["S3_ENDPOINT"], env["AWS_ACCESS_KEY_ID"],
                                      env["AWS_SECRET_ACCESS_KEY"], env["GREMLIN_ENDPOINT"]),
                       services.free_port()) as loader:
        yield loader


@pytest.fixture(scope="session")
def toxiproxy(endpoints) -> ToxiproxyClient:
    """The session's Toxiproxy, for network faults between the tests' clients and servers."""
    return ToxiproxyClient(endpoints.toxiproxy_url)


@pytest.fixture(scope="session")
def _gremlin_proxy(toxiproxy, endpoints) -> Proxy:
    return toxiproxy.create_proxy("gremlin", services.free_port(),
                                  f"{services.HOST}:{endpoints.gremlin_port}")


@pytest.fixture
def gremlin_proxy(_gremlin_proxy, toxiproxy) -> Proxy:
    """A Toxiproxy proxy in front of the test Gremlin Server; after the test it is enabled
    again and has no toxics."""
    yield _gremlin_proxy
    toxiproxy.reset()


@pytest.fixture
def proxied_gremlin_endpoint(gremlin_proxy) -> str:
    """The ws:// endpoint of the test Gremlin Server through `gremlin_proxy`."""
    return f"ws://{gremlin_proxy.host}:{gremlin_proxy.port}/gremlin"
