import io
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imagegraph.inference import STATUS_OK, STATUS_UNDECODABLE, InferenceSettings, \
    classify_contents
from imagegraph.model_artifact import MODEL_FILE, ModelMetadata, write_artifact
from imagegraph.model_cache import ModelCache

METADATA = ModelMetadata(name="brightness", version="1", input_height=4, input_width=4,
                         channels=1, preprocessing="scale_0_1", classes=("dark", "mid", "bright"))
SETTINGS = InferenceSettings(top_k=2, batch_size=2, max_image_bytes=10**6,
                             max_image_pixels=10**6, threads=1)


@pytest.fixture(scope="module")
def brightness_model():
    """A fixed-weight model whose logits are [0, 5m-2.5, 12m-8] for mean brightness m in 0..1:
    dark below 0.5, mid up to about 0.79, bright above."""
    import tensorflow as tf

    inputs = tf.keras.Input((4, 4, 1))
    mean = tf.keras.layers.GlobalAveragePooling2D()(inputs)
    dense = tf.keras.layers.Dense(3, activation="softmax")
    outputs = dense(mean)
    model = tf.keras.Model(inputs, outputs)
    dense.set_weights([np.array([[0.0, 5.0, 12.0]], np.float32),
                       np.array([0.0, -2.5, -8.0], np.float32)])
    return model


def png(level: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (6, 6), level).save(buffer, format="PNG")
    return buffer.getvalue()


def test_top_k_in_order_and_undecodable_rows_kept_in_place(brightness_model):
    paths = pd.Series(["s3a://b/dark.png", "s3a://b/bad.jpg", "s3a://b/bright.png",
                       "s3a://b/empty.png", "file:/tmp/mid.png"])
    contents = pd.Series([png(0), b"not an image", png(255), b"", png(150)])
    result = classify_contents(brightness_model, paths, contents, METADATA, SETTINGS)
    assert result["uri"].tolist() == ["s3://b/dark.png", "s3://b/bad.jpg", "s3://b/bright.png",
                                      "s3://b/empty.png", "file:///tmp/mid.png"]
    assert result["status"].tolist() == [STATUS_OK, STATUS_UNDECODABLE, STATUS_OK,
                                         STATUS_UNDECODABLE, STATUS_OK]
    assert result["reason"][1] == "not a recognised image format"
    assert result["reason"][3] == "empty object (0 bytes)"
    assert result["labels"][0] == ["dark", "mid"]
    assert result["labels"][2][0] == "bright"
    assert result["labels"][4][0] == "mid"
    assert result["scores"][0][0] > result["scores"][0][1]
    assert (result["width"][0], result["height"][0], result["format"][0]) == (6, 6, "PNG")
    assert result["key"][0] == "dark.png" and result["bucket"][0] == "b"


def test_model_cache_loads_once_per_key(brightness_model, tmp_path):
    write_artifact(str(tmp_path), brightness_model, METADATA)
    files = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    cache = ModelCache()
    first = cache.get("model:brightness@1", files)
    for _ in range(3):
        assert cache.get("model:brightness@1", files) is first
    assert cache.loads == 1
    assert MODEL_FILE in files
    batch = np.full((1, 4, 4, 1), 1.0, np.float32)
    np.testing.assert_allclose(np.asarray(first(batch)), np.asarray(brightness_model(batch)),
                               rtol=1e-6)
