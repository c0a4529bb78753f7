"""`make demo-finetune`: fine-tune MobileNetV2 from a weights file in S3 on photos, locally.

Starts moto's S3 server on a free port, puts 300 labeled photo crops into it (six scikit-image
photos, 50 random crops each; the class is the photo a crop comes from), writes a MobileNetV2
backbone's weights file into it, and runs `spark-submit jobs/train.py --base mobilenet_v2
--weights s3a://.../mobilenet_v2_notop.weights.h5`: a new head on the frozen backbone, then the
backbone's top unfrozen, with flips, crops and brightness/contrast changes in the input
pipeline. Copies the evaluation (evaluation.json and the three plots) to build/demo-finetune/,
prints `accuracy=<held-out accuracy>` and stops the server. With `--precision int8` it then
classifies the crops with `jobs/infer.py --precision int8 --no-graph`, whose run summary's
`precision` line gives int8's top-1 agreement with float32 and both accuracies on the held-out
crops the training run stored in the artifact.

No ImageNet weights can be downloaded here, so the weights file is that of a backbone the demo
builds with random convolutions and batch-normalisation statistics calibrated on other photos
(`backbone_weights_file`): the same file format and code path as `--weights imagenet` or a
weights file of your own (`backbone.save_weights(...)`), not the same accuracy.
`--per-photo N` and `--size PIXELS` shrink it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sample_images  # noqa: E402
import services  # noqa: E402
from s3_objects import put_objects, s3_client  # noqa: E402

from imagegraph.train.evaluation import EVALUATION_FILES  # noqa: E402

ROOT = services.ROOT
BUCKET = "imagegraph-finetune"
OUT = ROOT / "build" / "demo-finetune"
WEIGHTS_KEY = "weights/mobilenet_v2_notop.weights.h5"


def backbone_weights_file(size: int, directory: str) -> str:
    """A Keras weights file of MobileNetV2 without its top for size x size RGB input: random
    convolutions whose batch-normalisation statistics are calibrated on crops of other
    scikit-image photos (`OTHER_PHOTOS`, none of the classes). Left at their initial values
    (mean 0, variance 1) the statistics do not fit the activations, and the frozen backbone's
    features collapse to constants a head cannot learn from."""
    import io

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from imagegraph.train.backbones import application_backbone

    backbone = application_backbone("mobilenet_v2", size, size, None)
    crops = sample_images.photo_crops(per_photo=20, size=size, seed=1,
                                      photos=sample_images.OTHER_PHOTOS)
    batch = np.stack([np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), np.float32)
                      for body in crops.values()])
    for layer in backbone.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = 0.0  # the moving statistics become this one batch's
    backbone(tf.keras.applications.mobilenet_v2.preprocess_input(batch), training=True)
    path = os.path.join(directory, "mobilenet_v2_notop.weights.h5")
    backbone.save_weights(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-photo", type=int, default=50, help="crops per photo (class)")
    parser.add_argument("--size", type=int, default=96, help="model input, pixels a side")
    parser.add_argument("--precision", choices=["float32", "int8"], default="float32",
                        help="int8: classify the crops with the int8 model afterwards "
                             "(make demo-finetune PRECISION=int8)")
    args = parser.parse_args()
    run_dir = OUT / "services"
    port = services.free_port()
    started = time.monotonic()
    endpoint = services.start_s3(port, run_dir)
    try:
        env = {**os.environ, "S3_ENDPOINT": endpoint, "PYSPARK_PYTHON": sys.executable,
               "AWS_ACCESS_KEY_ID": services.LOCAL_ACCESS_KEY,
               "AWS_SECRET_ACCESS_KEY": services.LOCAL_SECRET_KEY}
        client = s3_client(endpoint, services.LOCAL_ACCESS_KEY, services.LOCAL_SECRET_KEY)
        crops = sample_images.photo_crops(per_photo=args.per_photo)
        put_objects(client, BUCKET, "photos/", crops)
        with tempfile.TemporaryDirectory() as local:
            client.upload_file(backbone_weights_file(args.size, local), BUCKET, WEIGHTS_KEY)
        print(f"== s3://{BUCKET}/photos/: {len(crops)} crops of "
              f"{len(sample_images.CROP_PHOTOS)} photos; s3://{BUCKET}/{WEIGHTS_KEY}", flush=True)
        model = f"s3a://{BUCKET}/models/photos-mobilenet/v1"
        command = [
            str(Path(sys.executable).parent / "spark-submit"), "--driver-java-options",
            f"-Dlog4j2.configurationFile={ROOT / 'conf' / 'log4j2.properties'}",
            str(ROOT / "jobs" / "train.py"), "--config", str(ROOT / "conf" / "local.yaml"),
            "--input", f"s3a://{BUCKET}/photos/", "--output", model,
            "--base", "mobilenet_v2", "--weights", f"s3a://{BUCKET}/{WEIGHTS_KEY}",
            "--epochs", "4", "--fine-tune-epochs", "3", "--unfreeze-layers", "30",
            "--early-stopping-patience", "2", "--model-name", "photos-mobilenet",
            "--model-version", "v1",
            "--set", "training.color_mode=rgb", "--set", f"training.input_height={args.size}",
            "--set", f"training.input_width={args.size}", "--set", "training.batch_size=32",
            "--set", "training.learning_rate=0.001", "--set", "training.augment_flip=true",
            "--set", "training.augment_crop=0.1", "--set", "training.augment_brightness=0.1",
            "--set", "training.augment_contrast=0.2"]
        print("   $ spark-submit " + " ".join(command[3:]), flush=True)
        subprocess.run(command, env=env, check=True, cwd=ROOT)
        if args.precision == "int8":
            classify = [*command[:3], str(ROOT / "jobs" / "infer.py"),
                        "--config", str(ROOT / "conf" / "local.yaml"),
                        "--input", f"s3a://{BUCKET}/photos/", "--model", model,
                        "--output", f"s3a://{BUCKET}/results", "--no-graph",
                        "--precision", "int8"]
            print("   $ spark-submit " + " ".join(classify[3:]), flush=True)
            subprocess.run(classify, env=env, check=True, cwd=ROOT)
        OUT.mkdir(parents=True, exist_ok=True)
        for name in EVALUATION_FILES:
            client.download_file(BUCKET, f"models/photos-mobilenet/v1/{name}", str(OUT / name))
    finally:
        services.stop_one("s3", run_dir)
    accuracy = json.loads((OUT / "evaluation.json").read_text())["accuracy"]
    print(f"   evaluation: {OUT}/" + ", ".join(EVALUATION_FILES))
    print(f"   ({time.monotonic() - started:.0f} s)")
    print(f"accuracy={accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
