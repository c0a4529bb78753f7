"""The training loop one worker runs: the driver alone, or each Spark task of a data-parallel
run (`train.distributed`), all running the same code under one `tf.distribute` strategy.

    build or restore the model -> for each phase (head on a frozen backbone, then its top
    unfrozen, starting from the head's best epoch; or the whole network at once) -> epochs of:
    steps over this worker's shard of the training split (gradients summed over workers, the
    learning rate as the phase's `RateSchedule` sets it each step), the held-out loss and
    accuracy, a checkpoint (the chief uploads it), early stopping -> the best epoch's model

A custom loop rather than `Model.fit`: Keras 3's `fit` does not run under
`MultiWorkerMirroredStrategy` (keras-team/keras#20585), while `strategy.run` over a Keras model
and optimizer does (Keras 3's TensorFlow optimizer sums gradients over replicas).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass

from imagegraph.model.tensorflow_output import remove_autograph_sources
from imagegraph.train.backbones import build_classifier, freeze_backbone, unfreeze_top
from imagegraph.train.checkpoints import BEST_MODEL, LAST_MODEL, CheckpointStore, TrainingState
from imagegraph.train.data import FeedSpec, tf_batches

log = logging.getLogger(__name__)

HEAD, FINE_TUNE, WHOLE = "head", "fine_tune", "whole"
"""Phases: a new head on the frozen backbone, then the backbone's top unfrozen; or the whole
network (from scratch, or `small_cnn`) in one phase."""


@dataclass(frozen=True)
class Phase:
    """Epochs [`first_epoch`, `end_epoch`) of the run (counted over all phases), trained at
    `learning_rate` (one worker's: `TrainingPlan.schedule` scales it)."""

    name: str
    first_epoch: int
    end_epoch: int
    learning_rate: float


@dataclass(frozen=True)
class RateSchedule:
    """The learning rate of each optimizer step of one phase (steps counted from 0 over the
    phase's `steps`): a linear warm-up over the first `warmup_steps`, step s at
    `peak` * (s + 1) / `warmup_steps`, then a half cosine from `peak` down towards
    `peak` * `final_fraction`, which the step after the phase's last would take (as Keras's
    `CosineDecay` counts); `final_fraction` 1 holds `peak` after the warm-up."""

    peak: float
    warmup_steps: int
    steps: int
    final_fraction: float

    def rate(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.peak * (self.final_fraction + (1.0 - self.final_fraction) * cosine)


@dataclass(frozen=True)
class TrainingPlan:
    """Everything a worker needs, picklable. `weights` is None (random), 'imagenet' or a
    local weights-file path; `train_images`/`holdout_images` are the split sizes; `resume`
    continues from the checkpoints' last state. Each phase's learning rate warms up over
    `warmup_epochs` and decays to `final_learning_rate_fraction` of its peak (`schedule`), the
    peak scaled by the number of workers when `learning_rate_scaling` is 'linear'."""

    base: str
    weights: str | None
    num_classes: int
    feed: FeedSpec
    epochs: int
    fine_tune_epochs: int
    unfreeze_layers: int
    learning_rate: float
    fine_tune_learning_rate: float
    warmup_epochs: float
    final_learning_rate_fraction: float
    learning_rate_scaling: str
    early_stopping_patience: int
    train_images: int
    holdout_images: int
    seed: int
    checkpoints: CheckpointStore
    resume: bool

    @property
    def pretrained(self) -> bool:
        return self.base != "small_cnn" and self.weights is not None

    def phases(self) -> tuple[Phase, ...]:
        if not self.pretrained:
            return (Phase(WHOLE, 0, self.epochs, self.learning_rate),)
        head = Phase(HEAD, 0, self.epochs, self.learning_rate)
        if not self.fine_tune_epochs:
            return (head,)
        return head, Phase(FINE_TUNE, self.epochs, self.epochs + self.fine_tune_epochs,
                           self.fine_tune_learning_rate)

    def schedule(self, phase: Phase, steps_per_epoch: int, workers: int) -> RateSchedule:
        """`phase`'s learning rates with `steps_per_epoch` optimizer steps an epoch on
        `workers` workers: the peak is the phase's rate, times `workers` under 'linear'
        scaling (the global batch is `workers` times one worker's: Goyal et al., "Accurate,
        Large Minibatch SGD", 2017); the warm-up is `warmup_epochs` of steps, rounded, at most
        the whole phase."""
        steps = (phase.end_epoch - phase.first_epoch) * steps_per_epoch
        scale = workers if self.learning_rate_scaling == "linear" else 1
        return RateSchedule(phase.learning_rate * scale,
                            min(steps, round(self.warmup_epochs * steps_per_epoch)), steps,
                            self.final_learning_rate_fraction)


@dataclass(frozen=True)
class TrainedModel:
    """What a worker's training produced: the best epoch's model (`.keras` bytes; the chief's
    only), the final state (history, images trained) and the images this worker stepped over."""

    model_bytes: bytes
    state: TrainingState
    worker_images: int


def next_phases(plan: TrainingPlan, state: TrainingState) -> list[tuple[Phase, int]]:
    """The phases still to train after `state`, each with the epoch it starts from: a phase
    that ended (all its epochs done, or stopped early) is skipped; an interrupted one goes on
    from its next epoch."""
    remaining = []
    current = [phase.name for phase in plan.phases()].index(state.phase)
    for index, phase in enumerate(plan.phases()):
        if index < current:
            continue
        if index == current and (state.phase_stopped or state.epochs_done >= phase.end_epoch):
            continue
        start = max(phase.first_epoch, state.epochs_done) if index == current \
            else phase.first_epoch
        remaining.append((phase, start))
    return remaining


def early_stop_update(state: TrainingState, epoch: int, val_loss: float, patience: int
                      ) -> tuple[TrainingState, bool]:
    """`state` after epoch `epoch` (0-based) ended with held-out loss `val_loss`, and whether
    the model improved on the best so far; the phase stops after `patience` epochs in a row
    without improvement (0: never)."""
    improved = state.best_val_loss is None or val_loss < state.best_val_loss
    if improved:
        return dataclasses.replace(state, best_val_loss=val_loss, best_epoch=epoch + 1,
                                   epochs_without_improvement=0), True
    waited = state.epochs_without_improvement + 1
    return dataclasses.replace(state, epochs_without_improvement=waited,
                               phase_stopped=bool(patience) and waited >= patience), False


def _compile(model, learning_rate: float) -> None:
    import tensorflow as tf

    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)


def _new_model(plan: TrainingPlan):
    height, width, channels = plan.feed.shape
    model = build_classifier(plan.base, height, width, channels, plan.num_classes, plan.weights)
    if plan.pretrained:
        freeze_backbone(model)
    _compile(model, plan.learning_rate)
    return model


def train_model(plan: TrainingPlan, train_data, holdout_data, worker: int = 0,
                workers: int = 1) -> TrainedModel:
    """Train per `plan` on the petastorm converters `train_data` (this worker reads shard
    `worker` of `workers`) and `holdout_data`. With `workers` > 1, TF_CONFIG must name them
    all (`train.distributed` sets it) and every worker must call this at once. Its local
    checkpoint files, and AutoGraph's (`remove_autograph_sources`), are removed when it returns
    or fails."""
    try:
        with tempfile.TemporaryDirectory(prefix="imagegraph-train-") as work:
            return _train_model(plan, train_data, holdout_data, worker, workers, work)
    finally:
        remove_autograph_sources()


def _train_model(plan: TrainingPlan, train_data, holdout_data, worker: int, workers: int,
                 work: str) -> TrainedModel:
    import tensorflow as tf

    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if workers > 1
                else tf.distribute.get_strategy())
    tf.keras.utils.set_random_seed(plan.seed + worker)
    chief = worker == 0
    state = plan.checkpoints.restore(work) if plan.resume else None
    with strategy.scope():
        if state is None:
            state = TrainingState(phase=plan.phases()[0].name)
            model = _new_model(plan)
        else:
            log.info("resuming after epoch %d (%s phase) from %s", state.epochs_done,
                     state.phase, plan.checkpoints.uri)
            model = tf.keras.models.load_model(os.path.join(work, LAST_MODEL))
    feed = plan.feed
    global_batch = feed.batch_size * workers
    steps = max(1, math.ceil(plan.train_images / global_batch))
    predict = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
    worker_images = 0
    with tf_batches(train_data, feed, training=True, shard=worker,
                    shard_count=workers) as train_ds:
        batches = iter(strategy.distribute_datasets_from_function(lambda _: train_ds))
        for phase, start in next_phases(plan, state):
            if state.phase != phase.name:
                log.info("%s phase from the weights of epoch %d, the best so far", phase.name,
                         state.best_epoch)
                with strategy.scope():
                    model.load_weights(os.path.join(work, BEST_MODEL))
                    unfreeze_top(model, plan.unfreeze_layers)
                    _compile(model, phase.learning_rate)
                state = dataclasses.replace(state, phase=phase.name, phase_stopped=False,
                                            epochs_without_improvement=0)
            step = _train_step(strategy, model, global_batch)
            rates = plan.schedule(phase, steps, workers)
            for epoch in range(start, phase.end_epoch):
                began = time.monotonic()
                loss_sum = correct = 0.0
                for index in range(steps):
                    model.optimizer.learning_rate = rates.rate(
                        (epoch - phase.first_epoch) * steps + index)
                    loss, right = step(batches)
                    loss_sum += float(loss)
                    correct += float(right)
                seconds = time.monotonic() - began
                worker_images += steps * feed.batch_size
                val_loss, val_accuracy = _evaluate(strategy, predict, holdout_data, feed)
                metrics = {"epoch": epoch + 1, "loss": loss_sum / steps,
                           "accuracy": correct / (steps * global_batch),
                           "val_loss": val_loss, "val_accuracy": val_accuracy,
                           "seconds": seconds}
                history = {key: [*state.history.get(key, []), round(value, 5)]
                           for key, value in metrics.items()}
                state = dataclasses.replace(state, epochs_done=epoch + 1, history=history,
                                            images_trained=state.images_trained
                                            + steps * global_batch)
                state, improved = early_stop_update(state, epoch, val_loss,
                                                    plan.early_stopping_patience)
                _checkpoint(plan.checkpoints, model, state, improved, work, chief)
                log.info("epoch %d/%d (%s): loss %.4f accuracy %.4f, held-out loss %.4f "
                         "accuracy %.4f, %.0f images/s, learning rate %.3g at its last step",
                         epoch + 1, plan.phases()[-1].end_epoch, phase.name, metrics["loss"],
                         metrics["accuracy"], val_loss, val_accuracy,
                         steps * global_batch / seconds,
                         rates.rate((epoch + 1 - phase.first_epoch) * steps - 1))
                if state.phase_stopped:
                    log.info("early stopping: %d epochs without a lower held-out loss",
                             state.epochs_without_improvement)
                    break
    with open(os.path.join(work, BEST_MODEL), "rb") as handle:
        best = handle.read() if chief else b""
    return TrainedModel(best, state, worker_images)


def _checkpoint(store: CheckpointStore, model, state: TrainingState, improved: bool,
                work: str, chief: bool) -> None:
    # every worker writes its copy (a model save may read variables collectively); the chief's
    # is uploaded
    model.save(os.path.join(work, LAST_MODEL))
    if improved:
        model.save(os.path.join(work, BEST_MODEL))
    if chief:
        store.save(work, state, improved)


def _train_step(strategy, model, global_batch: int):
    """A tf.function: one step over the next distributed batch; returns the summed loss (each
    replica's share of the global mean) and the number of correct predictions."""
    import tensorflow as tf

    optimizer = model.optimizer

    def replica_step(images, labels, weights):
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            per_image = tf.keras.losses.sparse_categorical_crossentropy(labels, probabilities)
            loss = tf.nn.compute_average_loss(per_image * weights,
                                              global_batch_size=global_batch)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        predicted = tf.argmax(probabilities, axis=1, output_type=tf.int32)
        return loss, tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))

    @tf.function
    def step(iterator):
        loss, correct = strategy.run(replica_step, args=next(iterator))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None))

    return step


def _evaluate(strategy, predict, holdout_data, feed: FeedSpec) -> tuple[float, float]:
    """Held-out mean loss and accuracy of the model behind `predict` (a tf.function: images ->
    probabilities); every worker reads the whole split, and the figures are averaged over
    workers so that all of them take the same early-stopping decision."""
    import tensorflow as tf

    loss_sum = correct = count = 0.0
    with tf_batches(holdout_data, feed, training=False) as holdout_ds:
        for images, labels, _ in holdout_ds:
            probabilities = predict(images)
            loss_sum += float(tf.reduce_sum(
                tf.keras.losses.sparse_categorical_crossentropy(labels, probabilities)))
            correct += float(tf.reduce_sum(tf.cast(tf.equal(
                tf.argmax(probabilities, axis=1, output_type=tf.int32), labels), tf.float32)))
            count += float(tf.shape(labels)[0])
    figures = tf.constant([loss_sum / max(count, 1.0), correct / max(count, 1.0)])
    agreed = strategy.reduce(tf.distribute.ReduceOp.MEAN,
                             strategy.run(lambda: tf.identity(figures)), axis=None)
    return float(agreed[0]), float(agreed[1])
