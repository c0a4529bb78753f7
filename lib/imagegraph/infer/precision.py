"""Which precision a run's model runs in, decided once on the driver before any image is
classified: float32 when asked for -> else the calibration sample (the artifact's, or drawn from
the job's input) -> the int8 conversion (full integer quantization, `model.cache.quantize_int8`)
-> the answer check on the sample's check images (`answer_check`: top-1 agreement by a binomial
test, top-k scores, embeddings; both accuracies when their labels are known) -> int8 when every
measure is within its bound. Otherwise, or when the conversion fails, the run uses float32 and
says why in one log line; int8 never fails a job.

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
from imagegraph.infer.answer_check import (
    AnswerCheck,
    CheckBounds,
    agreement_test,
    compare_answers,
    failed_measures,
    measured,
)
from imagegraph.infer.classify import InferenceSettings, prepare_object
from imagegraph.model.artifact import ModelMetadata
from imagegraph.model.calibration import INPUT, CalibrationSample, read_artifact_sample
from imagegraph.model.temperature import scale_scores
from imagegraph.model.tensorflow_output import quiet_tensorflow
from imagegraph.runs.report import RunReport

log = logging.getLogger(__name__)

FLOAT32 = "float32"
INT8 = "int8"


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses, the files to ship to the workers (the artifact's, plus the
    int8 model when it is used), the calibration sample's description, the answer check, what
    it measured in words and, when int8 was asked for but not used, why."""

    precision: str
    model_files: dict = field(repr=False)
    calibration: str = ""
    check: AnswerCheck | None = None
    measured: str = ""
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
            report.int8_max_score_delta = self.check.max_score_delta
            report.int8_min_embedding_cosine = self.check.min_embedding_cosine
            report.int8_check = self.measured


def precision_line(report: RunReport) -> str | None:
    """The run summary's line on int8 (None when it was not asked for): what ran, on which
    calibration sample, and the answer check, or why the run fell back to float32."""
    if not (report.int8_calibration or report.int8_fallback):
        return None
    if report.int8_fallback:
        return f"  precision            float32 (int8 not used: {report.int8_fallback})"
    accuracies = "" if report.int8_accuracy is None else (
        f", accuracy int8 {report.int8_accuracy:.4f} float32 {report.float32_accuracy:.4f}")
    return (f"  precision            int8 ({report.int8_calibration}; {report.int8_check}"
            f"{accuracies})")


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
                              CheckBounds.from_config(inference))


def quantize_and_check(model_files: dict[str, bytes], metadata: ModelMetadata,
                       settings: InferenceSettings, sample: CalibrationSample,
                       bounds: CheckBounds) -> PrecisionChoice:
    """Convert the model to int8 calibrated on `sample.calibration`, compare it with float32
    (in `settings.runtime`) on `sample.check` (top-k, the scores after
    `settings.temperature`, and with `settings.embedding` the embeddings), and choose int8
    when every measure is within `bounds`; float32 otherwise, or when there is nothing to
    calibrate on or check with, or the conversion fails."""
    from imagegraph.model.cache import INT8_MODEL_FILE, LoadedModel, ModelCache, quantize_int8

    calibration = sample.describe()
    if not len(sample.calibration) or not len(sample.check):
        return _fall_back(model_files, calibration, None, "",
                          f"no images to calibrate on or check with ({calibration})")
    try:
        with quiet_tensorflow():  # the conversion's dumps and log lines (see tensorflow_output)
            flatbuffer = quantize_int8(model_files, metadata, settings.batch_size,
                                       settings.embedding, sample.calibration)
            int8_model = LoadedModel(flatbuffer, metadata, settings.batch_size,
                                     settings.embedding)
    except Exception as exc:  # noqa: BLE001 (the converter's errors have many types)
        return _fall_back(model_files, calibration, None, "",
                          f"the int8 conversion failed: {_first_line(exc)}")
    float32_model = ModelCache().get(metadata, model_files, settings.batch_size,
                                     settings.embedding, runtime=settings.runtime)
    float32_scores, int8_scores, float32_embeddings, int8_embeddings = _answers(
        float32_model, int8_model, sample.check, settings.batch_size)
    # the scores compared are the ones the run writes: after the model's temperature
    float32_scores, int8_scores = (scale_scores(scores, settings.temperature)
                                   for scores in (float32_scores, int8_scores))
    check = compare_answers(float32_scores, int8_scores, sample.check_labels, settings.top_k,
                            float32_embeddings, int8_embeddings)
    check_text = measured(check, agreement_test(check.images, bounds.min_agreement))
    failed = failed_measures(check, bounds, sample.source)
    if failed:
        return _fall_back(model_files, calibration, check, check_text,
                          f"int8 answers differ from float32's: {failed}{_accuracies(check)}")
    log.info("precision int8 (%s): %s%s", calibration, check_text, _accuracies(check))
    return PrecisionChoice(INT8, {**model_files, INT8_MODEL_FILE: flatbuffer}, calibration,
                           check, check_text)


def _fall_back(model_files: dict[str, bytes], calibration: str, check: AnswerCheck | None,
               check_text: str, reason: str) -> PrecisionChoice:
    log.warning("inference.precision int8: running float32 instead: %s", reason)
    return PrecisionChoice(FLOAT32, model_files, calibration, check, check_text, reason)


def _answers(float32_model, int8_model, pixels: np.ndarray, batch_size: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Both models' (`model.cache.LoadedModel`s) probabilities for every image of `pixels`,
    float32's then int8's, and their embeddings likewise (None when they give none)."""
    outputs = [[model.predict(pixels[start:start + batch_size])
                for start in range(0, len(pixels), batch_size)]
               for model in (float32_model, int8_model)]
    probabilities = [np.concatenate([p for p, _ in batches]) for batches in outputs]
    embeddings = [None if batches[0][1] is None else np.concatenate([e for _, e in batches])
                  for batches in outputs]
    return probabilities[0], probabilities[1], embeddings[0], embeddings[1]


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
    """Up to `calibration_images` + `check_images` of `objects` (columns `uri`, `size`,
    `etag`), in the order of their URIs' hashes, read and decoded on the driver as the workers
    do (objects that fail are left out), split in that proportion; no labels."""
    rows = (objects.select("uri", "size", "etag").orderBy(F.xxhash64("uri"))
            .limit(calibration_images + check_images).collect())
    with ThreadPoolExecutor(max_workers=settings.reader.threads,
                            thread_name_prefix="imagegraph-calibration") as pool:
        prepared = pool.map(lambda row: prepare_object(
            row["uri"], None if row["size"] is None else int(row["size"]), metadata, settings,
            row["etag"]), rows)
        pixels = [image for _, image in prepared if image is not None]
    shape = (0, metadata.input_height, metadata.input_width, metadata.channels)
    images = np.stack(pixels) if pixels else np.zeros(shape, np.uint8)
    split = round(len(images) * calibration_images / (calibration_images + check_images))
    return CalibrationSample(images[:split], images[split:], None, INPUT)
