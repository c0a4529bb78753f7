"""Which conversion keeps a model's answers in int8: each remedy converted and checked as the job
checks int8 (`imagegraph.infer.answer_check`), one table row each.

    PYTHONPATH=lib .venv/bin/python dev/int8_remedies.py --model build/int8fix/model

`--model` is a local artifact directory as jobs/train.py writes it (model.keras, metadata.json,
calibration.npz). The remedies, each against float32 run in TensorFlow:

- `baseline`: today's conversion (`quantize_int8`): full int8, calibrated on the artifact's
  calibration images plus one black and one white frame;
- `no-frames`: the same without the black and white frames;
- `stratified`: calibrated on `--stratified-per-class` fresh crops of each class's photo
  (`sample_images.photo_crops`, another seed than training's), near-constant frames (pixel
  standard deviation under `--constant-std` levels) left out, no black and white frames;
- `16x8`: int16 activations, int8 weights
  (`EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`),
  on the baseline's calibration images, and on the stratified ones;
- `debugger-N`: TensorFlow Lite's quantization debugger ranks the layers by RMSE / scale of
  their int8 output against float's on the calibration images, and the worst N stay in float
  (`denylisted_nodes`; a model with float input and output and some float kernels);
- `float-OP`: every operation of a kind of `--float-ops` stays in float (`denylisted_ops`);
- `per-tensor`: the baseline with one scale per weight tensor instead of one per channel;
- `weights-only`: a diagnosis, not a remedy: int8 weights and float activations (dynamic range
  quantization), to tell the weights' share of the loss from the activations'.

Each is checked on the artifact's labeled check images (held out by training) and on
`--agreement-per-class` fresh crops of each photo (another seed again): top-1 agreement with
float32, the largest top-k score difference, the smallest embedding cosine similarity and both
accuracies. The fresh crops overlap the training crops' photos, so their accuracy is not a
held-out one; their agreement is the figure with more images behind it.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sample_images  # noqa: E402

from imagegraph.config import InferenceConfig  # noqa: E402
from imagegraph.imaging.decode import decode_image  # noqa: E402
from imagegraph.infer.answer_check import compare_answers  # noqa: E402
from imagegraph.model.artifact import (  # noqa: E402
    METADATA_FILE,
    MODEL_FILE,
    ModelMetadata,
)
from imagegraph.model.cache import (  # noqa: E402
    LoadedModel,
    ModelCache,
    calibration_batches,
    convert_int8,
    int8_converter,
    quantize_int8,
)
from imagegraph.model.calibration import CALIBRATION_FILE, CalibrationSample  # noqa: E402
from imagegraph.model.tensorflow_output import quiet_tensorflow  # noqa: E402

TOP_K = InferenceConfig().top_k


def fresh_crops(metadata: ModelMetadata, per_class: int, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` new crops of each class's photo, decoded to the model's input as the job
    decodes them: (uint8 pixels (n, h, w, c), int32 class indices)."""
    crops = sample_images.photo_crops(per_photo=per_class, seed=seed,
                                      photos=tuple(metadata.classes))
    pixels = np.stack([decode_image(body, metadata.input_height, metadata.input_width,
                                    metadata.channels, 10**7, 10**7).pixels
                       for body in crops.values()])
    labels = np.array([metadata.classes.index(key.split("/")[0]) for key in crops], np.int32)
    return pixels, labels


def not_constant(pixels: np.ndarray, min_std: float) -> np.ndarray:
    """The images of `pixels` whose pixel standard deviation is at least `min_std` levels."""
    keep = pixels.reshape(len(pixels), -1).std(axis=1) >= min_std
    return pixels[keep]


def int16_activations(converter) -> bytes:
    """`converter` run on integer kernels of int16 activations and int8 weights; float input
    and output."""
    import tensorflow as tf

    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return converter.convert()


def layer_errors(converter, samples: np.ndarray, metadata: ModelMetadata, batch_size: int
                 ) -> list[tuple[str, str, float]]:
    """The quantization debugger's layers of `converter`'s int8 model, worst first: (operation,
    output tensor name, RMSE of its int8 output against float / the output's scale) averaged
    over the batches of `samples`. Rounding alone gives 1 / sqrt(12) = 0.289."""
    import tensorflow as tf

    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=calibration_batches(samples, metadata, batch_size))
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = list(csv.DictReader(io.StringIO(dump.getvalue())))
    ranked = [(row["op_name"], row["tensor_name"],
               float(np.sqrt(float(row["mean_squared_error"])) / float(row["scale"])))
              for row in rows if float(row["scale"]) > 0]
    return sorted(ranked, key=lambda item: -item[2])


def layer_name(tensor_name: str) -> str:
    """The Keras layer of a TensorFlow Lite tensor name: `block_13_project_BN_1` of
    `functional_2_1/functional_1_1/backbone_1/block_13_project_BN_1/batchnorm/add_1;...`."""
    parts = tensor_name.split(";")[0].split("/")
    return next((part for part in parts[:-1]
                 if not part.startswith(("functional", "backbone"))), parts[-1])


def kept_in_float(converter, samples: np.ndarray, metadata: ModelMetadata, batch_size: int,
                  nodes: list[str] | None = None, ops: list[str] | None = None) -> bytes:
    """`converter`'s int8 model (float input and output) with the layers whose outputs are
    `nodes`, and every operation of the kinds `ops`, left in float (the debugger's
    `denylisted_nodes`, `denylisted_ops`)."""
    import tensorflow as tf

    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=calibration_batches(samples, metadata, batch_size),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=nodes, denylisted_ops=ops))
    return debugger.get_nondebug_quantized_model()


def float_kernels(flatbuffer: bytes) -> int:
    """How many operations of the TensorFlow Lite model `flatbuffer`, other than QUANTIZE and
    DEQUANTIZE, take a float32 first input."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    count = 0
    for op in interpreter._get_ops_details():
        inputs = [index for index in op["inputs"] if index >= 0]
        if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE") and inputs and \
                interpreter._get_tensor_details(inputs[0], 0)["dtype"] == np.float32:
            count += 1
    return count


def top1_margins(probabilities: np.ndarray) -> np.ndarray:
    """Each image's best score less its second best."""
    ordered = np.sort(probabilities, axis=1)
    return ordered[:, -1] - ordered[:, -2]


def answers(model: LoadedModel, pixels: np.ndarray, batch_size: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, embeddings) of every image of `pixels`."""
    outputs = [model.predict(pixels[start:start + batch_size])
               for start in range(0, len(pixels), batch_size)]
    return (np.concatenate([p for p, _ in outputs]),
            np.concatenate([e for _, e in outputs]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local artifact directory")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--stratified-per-class", type=int, default=100,
                        help="fresh crops per class to calibrate on (stratified)")
    parser.add_argument("--agreement-per-class", type=int, default=100,
                        help="fresh crops per class to check agreement on")
    parser.add_argument("--constant-std", type=float, default=4.0,
                        help="frames of a lower pixel standard deviation are near-constant")
    parser.add_argument("--debugger-layers", default="5,10,20",
                        help="how many of the worst layers the debugger keeps in float")
    parser.add_argument("--float-ops", default="FULLY_CONNECTED,DEPTHWISE_CONV_2D,CONV_2D",
                        help="kinds of operation kept in float, one remedy each")
    parser.add_argument("--remedies", default="baseline,no-frames,stratified,16x8,"
                        "16x8-stratified,debugger,per-tensor,weights-only")
    args = parser.parse_args()
    directory = Path(args.model)
    metadata = ModelMetadata.from_json((directory / METADATA_FILE).read_text(),
                                       uri=str(directory))
    files = {MODEL_FILE: (directory / MODEL_FILE).read_bytes()}
    sample = CalibrationSample.from_npz((directory / CALIBRATION_FILE).read_bytes())
    batch = args.batch_size
    stratified_pixels, _ = fresh_crops(metadata, args.stratified_per_class, seed=11)
    stratified = not_constant(stratified_pixels, args.constant_std)
    artifact = not_constant(sample.calibration, args.constant_std)
    shape = (1, metadata.input_height, metadata.input_width, metadata.channels)
    framed = np.concatenate([np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8),
                             sample.calibration])
    fresh_pixels, fresh_labels = fresh_crops(metadata, args.agreement_per_class, seed=12)
    check_sets = {"artifact check": (sample.check, sample.check_labels),
                  "fresh crops": (fresh_pixels, fresh_labels)}
    print(f"model {metadata.tag} {metadata.input_height}x{metadata.input_width}, "
          f"{len(metadata.classes)} classes; artifact: {len(sample.calibration)} calibration "
          f"images ({len(sample.calibration) - len(artifact)} near-constant), "
          f"{len(sample.check)} check; stratified: {len(stratified)} of "
          f"{len(stratified_pixels)} fresh crops kept; fresh check crops: {len(fresh_pixels)}",
          flush=True)

    with quiet_tensorflow():
        float32_model = ModelCache().get(metadata, files, batch, embedding=True)
        float32_answers = {name: answers(float32_model, pixels, batch)
                           for name, (pixels, _) in check_sets.items()}
        for name, (scores, _) in float32_answers.items():
            margins = top1_margins(scores)
            print(f"float32 on the {name}: top-1 score over the second's by median "
                  f"{np.median(margins):.4f}; {int(np.sum(margins < 0.05))} of {len(margins)} "
                  "images by under 0.05", flush=True)
        float32_lite = ModelCache().get(metadata, files, batch, embedding=True,
                                        runtime="tflite")
        timed = time.monotonic()
        answers(float32_lite, fresh_pixels, batch)
        print(f"float32 on TensorFlow Lite (XNNPACK): "
              f"{(time.monotonic() - timed) / len(fresh_pixels) * 1000:.2f} ms an image",
              flush=True)

        def converter(samples):
            return int8_converter(files, metadata, batch, True, samples)

        def per_tensor():
            converted = converter(framed)
            converted._experimental_disable_per_channel = True
            return convert_int8(converted, metadata)

        def weights_only():
            converted = converter(framed)
            converted.representative_dataset = None  # dynamic range: float activations
            return converted.convert()

        remedies = {
            "baseline": lambda: quantize_int8(files, metadata, batch, True, sample.calibration),
            "no-frames": lambda: convert_int8(converter(sample.calibration), metadata),
            "stratified": lambda: convert_int8(converter(stratified), metadata),
            "16x8": lambda: int16_activations(converter(framed)),
            "16x8-stratified": lambda: int16_activations(converter(stratified)),
            "per-tensor": per_tensor,
            "weights-only": weights_only,
        }
        chosen = args.remedies.split(",")
        if "debugger" in chosen:
            ranked = layer_errors(converter(framed), framed, metadata, batch)
            values = [value for _, _, value in ranked]
            print(f"debugger: {len(ranked)} layers, RMSE / scale from {values[-1]:.3f} to "
                  f"{values[0]:.3f} (median {np.median(values):.3f}); the worst: " + ", ".join(
                      f"{op} {layer_name(name)} {value:.3f}"
                      for op, name, value in ranked[:8]), flush=True)
            for count in map(int, args.debugger_layers.split(",")):
                nodes = [name for _, name, _ in ranked[:count]]
                remedies[f"debugger-{count}"] = (
                    lambda nodes=nodes: kept_in_float(converter(framed), framed, metadata,
                                                      batch, nodes=nodes))
                chosen.append(f"debugger-{count}")
            for op in args.float_ops.split(","):
                remedies[f"float-{op}"] = (
                    lambda op=op: kept_in_float(converter(framed), framed, metadata, batch,
                                                ops=[op]))
                chosen.append(f"float-{op}")
        print("| remedy | check images | top-1 agreement | max top-k score diff | "
              "min embedding cosine | accuracy float32 | accuracy int8 | ms an image | "
              "float kernels | size KB | convert s |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
              flush=True)
        for name in chosen:
            if name not in remedies:
                continue
            started = time.monotonic()
            try:
                flatbuffer = remedies[name]()
            except Exception as exc:  # noqa: BLE001 (the converter's errors have many types)
                print(f"| {name} | - | conversion failed: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:200]} |", flush=True)
                continue
            seconds = time.monotonic() - started
            model = LoadedModel(flatbuffer, metadata, batch, embedding=True)
            floats = float_kernels(flatbuffer)
            for set_name, (pixels, labels) in check_sets.items():
                float32_scores, float32_embeddings = float32_answers[set_name]
                timed = time.monotonic()
                int8_scores, int8_embeddings = answers(model, pixels, batch)
                per_image = (time.monotonic() - timed) / len(pixels) * 1000
                check = compare_answers(float32_scores, int8_scores, labels, TOP_K,
                                        float32_embeddings, int8_embeddings)
                print(f"| {name} | {len(pixels)} {set_name} | {check.agreeing} "
                      f"({check.agreement:.2%}) | {check.max_score_delta:.4f} | "
                      f"{check.min_embedding_cosine:.5f} | {check.float32_accuracy:.4f} | "
                      f"{check.int8_accuracy:.4f} | {per_image:.2f} | {floats} | "
                      f"{len(flatbuffer) // 1024} | {seconds:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
