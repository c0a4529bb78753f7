"""Which precision a run's model runs in, decided once on the driver before any image is
classified: float32 when asked for -> else the calibration sample (the artifact's, or drawn from
the job's input) -> the int8 conversion (full integer quantization, `model.cache.quantize_int8`)
-> the answer check: int8's top-1 against float32's on the sample's check images (and both
accuracies when their labels are known) -> int8 when they agree on at least
`inference.int8_min_agreement` of them. Otherwise, or when the conversion fails, the run uses
float32 and says why in one log line; int8 never fails a job.

The workers run the int8 model the check approved: its flatbuffer is shipped with the artifact's
files (`model.cache.INT8_MODEL_FILE`), so it is converted once per run, not once per worker.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from imagegraph.config import InferenceConfig
from imagegraph.infer.classify import InferenceSettings, prepare_object
from imagegraph.model.artifact import ModelMetadata
from imagegraph.model.calibration import INPUT, CalibrationSample, read_artifact_sample
from imagegraph.model.tensorflow_output import quiet_tensorflow
from imagegraph.runs.report import RunReport

log = logging.getLogger(__name__)

FLOAT32 = "float32"
INT8 = "int8"


@dataclass(frozen=True)
class AnswerCheck:
    """int8 against float32 on `images` check images: the fraction whose top-1 class agrees,
    and each precision's top-1 accuracy (None when the images' labels are unknown)."""

    images: int
    agreement: float
    int8_accuracy: float | None = None
    float32_accuracy: float | None = None


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses, the files to ship to the workers (the artifact's, plus the
    int8 model when it is used), the calibration sample's description, the answer check and,
    when int8 was asked for but not used, why."""

    precision: str
    model_files: dict = field(repr=False)
    calibration: str = ""
    check: AnswerCheck | None = None
    fallback: str = ""

    def record(self, report: RunReport) -> None:
        """Put the choice into the run report."""
        report.precision = self.precision
        report.int8_calibration = self.calibration
        report.int8_fallback = self.fallback
        if self.check is not None:
            report.int8_check_images = self.check.images
            report.int8_agreement = self.check.agreement
            report.int8_accuracy = self.check.int8_accuracy
            report.float32_accuracy = self.check.float32_accuracy


def precision_line(report: RunReport) -> str | None:
    """The run summary's line on int8 (None when it was not asked for): what ran, on which
    calibration sample, and the answer check, or why the run fell back to float32."""
    if not (report.int8_calibration or report.int8_fallback):
        return None
    if report.int8_fallback:
        return f"  precision            float32 (int8 not used: {report.int8_fallback})"
    accuracies = "" if report.int8_accuracy is None else (
        f", accuracy int8 {report.int8_accuracy:.4f} float32 {report.float32_accuracy:.4f}")
    return (f"  precision            int8 ({report.int8_calibration}; top-1 agreement with "
            f"float32 {report.int8_agreement:.2%}{accuracies})")


def compare_answers(float32_probabilities: np.ndarray, int8_probabilities: np.ndarray,
                    labels: np.ndarray | None) -> AnswerCheck:
    """The answer check of two (images, classes) probability arrays of the same images, with
    the images' class indices when known."""
    float32_top = np.argmax(float32_probabilities, axis=1)
    int8_top = np.argmax(int8_probabilities, axis=1)
    images = len(float32_top)
    if labels is None:
        return AnswerCheck(images, float(np.mean(float32_top == int8_top)))
    return AnswerCheck(images, float(np.mean(float32_top == int8_top)),
                       float(np.mean(int8_top == labels)), float(np.mean(float32_top == labels)))


def choose_precision(spark: SparkSession, inference: InferenceConfig, metadata: ModelMetadata,
                     model_files: dict[str, bytes], objects: DataFrame,
                     settings: InferenceSettings) -> PrecisionChoice:
    """The precision of a run of `metadata`'s model (files `model_files`) over `objects`
    (columns `uri`, `size`) with `settings`, as `inference.precision` asks and the answer check
    allows; the calibration sample is the artifact's, or else drawn from `objects`."""
    if inference.precision != INT8:
        return PrecisionChoice(FLOAT32, model_files)
    sample = read_artifact_sample(spark, metadata.uri) or draw_from_input(
        objects, metadata, settings, inference.int8_calibration_images,
        inference.int8_check_images)
    return quantize_and_check(model_files, metadata, settings, sample,
                              inference.int8_min_agreement)


def quantize_and_check(model_files: dict[str, bytes], metadata: ModelMetadata,
                       settings: InferenceSettings, sample: CalibrationSample,
                       min_agreement: float) -> PrecisionChoice:
    """Convert the model to int8 calibrated on `sample.calibration`, compare it with float32
    (in `settings.runtime`) on `sample.check`, and choose int8 when the top-1 agreement is at
    least `min_agreement`; float32 otherwise, or when there is nothing to calibrate on or check
    with, or the conversion fails."""
    from imagegraph.model.cache import INT8_MODEL_FILE, LoadedModel, ModelCache, quantize_int8

    calibration = sample.describe()
    if not len(sample.calibration) or not len(sample.check):
        return _fall_back(model_files, calibration, None,
                          f"no images to calibrate on or check with ({calibration})")
    try:
        with quiet_tensorflow():  # the conversion's dumps and log lines (see tensorflow_output)
            flatbuffer = quantize_int8(model_files, metadata, settings.batch_size,
                                       settings.embedding, sample.calibration)
            int8_model = LoadedModel(flatbuffer, metadata, settings.batch_size,
                                     settings.embedding)
    except Exception as exc:  # noqa: BLE001 (the converter's errors have many types)
        return _fall_back(model_files, calibration, None,
                          f"the int8 conversion failed: {_first_line(exc)}")
    float32_model = ModelCache().get(metadata, model_files, settings.batch_size,
                                     settings.embedding, runtime=settings.runtime)
    check = compare_answers(_probabilities(float32_model, sample.check, settings.batch_size),
                            _probabilities(int8_model, sample.check, settings.batch_size),
                            sample.check_labels)
    if check.agreement < min_agreement:
        return _fall_back(model_files, calibration, check,
                          f"int8 agreed with float32's top-1 class on {check.agreement:.2%} of "
                          f"{check.images} {sample.source} images, under "
                          f"inference.int8_min_agreement {min_agreement:.2%}"
                          f"{_accuracies(check)}")
    log.info("precision int8 (%s): top-1 agreement with float32 %.2f%% of %d images%s",
             calibration, 100 * check.agreement, check.images, _accuracies(check))
    return PrecisionChoice(INT8, {**model_files, INT8_MODEL_FILE: flatbuffer}, calibration,
                           check)


def _fall_back(model_files: dict[str, bytes], calibration: str, check: AnswerCheck | None,
               reason: str) -> PrecisionChoice:
    log.warning("inference.precision int8: running float32 instead: %s", reason)
    return PrecisionChoice(FLOAT32, model_files, calibration, check, reason)


def _probabilities(model, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """The probabilities of `model` (a `model.cache.LoadedModel`) for every image of `pixels`."""
    return np.concatenate([model.predict(pixels[start:start + batch_size])[0]
                           for start in range(0, len(pixels), batch_size)])


def _accuracies(check: AnswerCheck) -> str:
    if check.int8_accuracy is None:
        return ""
    return (f"; accuracy int8 {check.int8_accuracy:.4f}, float32 "
            f"{check.float32_accuracy:.4f}")


def _first_line(exc: Exception) -> str:
    """`ConverterError: ... 'tf.Erf' op is neither a custom op nor a flex op`: the type and the
    first error the converter names, at most 300 characters."""
    text = str(exc).strip()
    marker = text.find(" op ")
    if marker > 0:  # MLIR's message: locations first, then `'tf.Name' op <what is wrong>`
        start = text.rfind("'", 0, text.rfind("'", 0, marker))
        text = text[start:]
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:300]}"


def draw_from_input(objects: DataFrame, metadata: ModelMetadata, settings: InferenceSettings,
                    calibration_images: int, check_images: int) -> CalibrationSample:
    """Up to `calibration_images` + `check_images` of `objects` (columns `uri`, `size`), in the
    order of their URIs' hashes, read and decoded on the driver as the workers do (objects
    that fail are left out), split in that proportion; no labels."""
    rows = (objects.select("uri", "size").orderBy(F.xxhash64("uri"))
            .limit(calibration_images + check_images).collect())
    with ThreadPoolExecutor(max_workers=settings.reader.threads,
                            thread_name_prefix="imagegraph-calibration") as pool:
        prepared = pool.map(lambda row: prepare_object(
            row["uri"], None if row["size"] is None else int(row["size"]), metadata, settings),
            rows)
        pixels = [image for _, image in prepared if image is not None]
    shape = (0, metadata.input_height, metadata.input_width, metadata.channels)
    images = np.stack(pixels) if pixels else np.zeros(shape, np.uint8)
    split = round(len(images) * calibration_images / (calibration_images + check_images))
    return CalibrationSample(images[:split], images[split:], None, INPUT)
