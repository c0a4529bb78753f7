"""The run report: what happened to every listed object, and whether terms counted
independently of each other agree.

The run decides an outcome for each object (`classified`, `dead_lettered_by_reason`,
`graph_written`, `graph_failed`, from its staged results); after its last commit it reads back
what the datasets hold for its run id (`committed_predictions`, `committed_dead_letters`) and
the graph's image vertices holding a classified_as edge of its run (`graph_images`), and counts
what it skipped as done (`skipped_done`, a join of the listing with earlier runs' output, not a
difference; `skipped_out_of_attempts` of them were not written but dead-lettered as often as
their retry class allows, see `imagegraph.dead_letters`). A lost or duplicated object makes
at least one of `disagreements` appear."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from imagegraph.storage.outputs import DEAD_LETTER_DIR, PREDICTIONS_DIR, run_rows_uri

SUCCEEDED, FAILED = "succeeded", "failed"


def images_per_s(processed: int, seconds: float) -> float:
    """The one throughput figure of a run, a chunk or a moment of progress: objects processed
    (classified or dead-lettered; not those skipped as done) per second of the time they took,
    a run's from its start; 0.0 before any time has passed."""
    return processed / seconds if seconds > 0 else 0.0


@dataclass
class RunReport:
    """Counts of one inference run. Every listed object is written (to the graph and
    predictions/, or with the graph off to predictions/ alone), dead-lettered, or skipped as
    done by an earlier run (`--resume`: done for this model and `graph_endpoint`, the Gremlin
    endpoint written to, "" with the graph off); every classified object is written or
    dead-lettered by the graph stage. `precision` is what the model ran in; with int8 asked
    for, the `int8_` fields say which calibration sample was used, the answer check on
    `int8_check_images` images (top-1 agreement with float32, the largest top-k score
    difference, the smallest embedding cosine similarity (None without embeddings), both
    accuracies when labels were known, and `int8_check`, all that in words with the top-1
    test's threshold and power) and why the run fell back to float32, if it did (see
    `infer.precision`). `temperature` is what the model's logits were divided by (1.0: its
    scores as it gives them); `unknown` counts the classified images whose best score was under
    `min_score` (0: no threshold). `chunk_figures` has a dict per committed chunk and
    `top1_by_class` the committed predictions by top-1 class (see `runs.figures`);
    `model_ran_s` and `model_waited_s` are the seconds the tasks' models classified and
    waited for their next batch to be read and decoded, summed over tasks (a model that waits
    most of its time: the run is bound by reading and decoding, see `infer.classify`);
    `report_uri` is where the report is written, `picture_uri` the run's PNG."""

    run_id: str
    source: str
    output_uri: str
    model: str
    shard: str = ""
    resume: bool = False
    started_at: str = ""
    listed: int = 0
    without_modified: int = 0
    skipped_done: int = 0
    skipped_out_of_attempts: int = 0
    classified: int = 0
    unknown: int = 0
    min_score: float = 0.0
    temperature: float = 1.0
    dead_lettered_by_reason: dict = field(default_factory=dict)
    graph_written: int = 0
    graph_failed: int = 0
    vertices_written: int = 0
    edges_written: int = 0
    graph_requests: int = 0
    graph_retries: int = 0
    graph_enabled: bool = True
    graph_endpoint: str = ""
    committed_predictions: int = 0
    committed_dead_letters: int = 0
    graph_images: int = 0
    chunks: int = 0
    elapsed_s: float = 0.0
    model_ran_s: float = 0.0
    model_waited_s: float = 0.0
    precision: str = "float32"
    int8_calibration: str = ""
    int8_check_images: int = 0
    int8_agreement: float | None = None
    int8_accuracy: float | None = None
    float32_accuracy: float | None = None
    int8_max_score_delta: float | None = None
    int8_min_embedding_cosine: float | None = None
    int8_check: str = ""
    int8_fallback: str = ""
    chunk_figures: list = field(default_factory=list)
    top1_by_class: dict = field(default_factory=dict)
    report_uri: str = ""
    picture_uri: str = ""
    status: str = ""
    stop: str = ""

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_lettered_by_reason.values())

    @property
    def written(self) -> int:
        """Prediction rows of this run, read back from predictions/."""
        return self.committed_predictions

    @property
    def decided_written(self) -> int:
        """Objects the run decided were written: classified, less those the graph refused."""
        return self.classified - (self.graph_failed if self.graph_enabled else 0)

    @property
    def processed(self) -> int:
        """Objects this run worked on: listed but not skipped."""
        return self.listed - self.skipped_done

    @property
    def failed_fraction(self) -> float:
        return self.dead_lettered / self.processed if self.processed else 0.0

    @property
    def images_per_s(self) -> float:
        return images_per_s(self.processed, self.elapsed_s)

    @property
    def model_waited_fraction(self) -> float:
        """Of the tasks' model time, the part spent waiting for reads and decodes, 0 to 1."""
        total = self.model_ran_s + self.model_waited_s
        return self.model_waited_s / total if total else 0.0

    def disagreements(self) -> list[str]:
        """Each relation between independently counted terms that does not hold, in words;
        empty when the run reconciles."""
        equations = [
            ("listed = committed predictions + committed dead letters + skipped", self.listed,
             self.committed_predictions + self.committed_dead_letters + self.skipped_done),
            ("committed predictions = classified - graph failed", self.committed_predictions,
             self.decided_written),
            ("committed dead letters = dead-lettered", self.committed_dead_letters,
             self.dead_lettered),
        ]
        if self.graph_enabled:
            equations.append(("classified = graph written + graph failed", self.classified,
                              self.graph_written + self.graph_failed))
        found = [f"{text}: {left} != {right}" for text, left, right in equations
                 if left != right]
        # A row the graph refused may have had some of its edges written before another of
        # its requests was refused: its vertex then holds an edge of the run too.
        if self.graph_enabled and not (self.committed_predictions <= self.graph_images
                                       <= self.committed_predictions + self.graph_failed):
            found.append(f"committed predictions <= graph image vertices of the run <= "
                         f"committed predictions + graph failed: {self.committed_predictions} "
                         f"<= {self.graph_images} <= "
                         f"{self.committed_predictions + self.graph_failed} does not hold")
        return found

    def reconciles(self) -> bool:
        return not self.disagreements()

    def to_dict(self) -> dict:
        """The report as JSON-ready data, with the derived figures."""
        return {**asdict(self), "written": self.written, "dead_lettered": self.dead_lettered,
                "failed_fraction": self.failed_fraction,
                "model_waited_fraction": self.model_waited_fraction,
                "reconciled": self.reconciles(), "disagreements": self.disagreements()}

    def summary_lines(self) -> list[str]:
        shard = f", shard {self.shard}" if self.shard else ""
        lines = [
            f"run {self.run_id}: {self.source}{shard} -> {self.output_uri} with {self.model}",
            f"  objects listed       {self.listed}",
            *([f"  without modified     {self.without_modified} (left out: no modified time "
               f"for the filters)"] if self.without_modified else []),
            f"  skipped as done      {self.skipped_done}"
            + ("" if self.resume else " (no --resume)")
            + (f" ({self.skipped_out_of_attempts} out of attempts)"
               if self.skipped_out_of_attempts else ""),
            f"  classified           {self.classified}"
            + (f" ({self.unknown} unknown: best score under {self.min_score:g})"
               if self.min_score else ""),
            f"  dead-lettered        {self.dead_lettered}",
        ]
        lines += [f"    {count:6d}  {reason}"
                  for reason, count in sorted(self.dead_lettered_by_reason.items())]
        if self.graph_enabled:
            lines += [
                f"  written to graph     {self.graph_written} images "
                f"({self.vertices_written} vertices, {self.edges_written} edges, "
                f"{self.graph_requests} requests, {self.graph_retries} retries); "
                f"{self.graph_images} read back",
            ]
        else:
            lines.append(f"  written              {self.decided_written} (graph writes off)")
        lines += [
            f"  elapsed              {self.elapsed_s:.1f} s ({self.images_per_s:.1f} images/s, "
            f"{self.chunks} chunk(s))",
            *([f"  model                {self.model_ran_s:.1f} task-s classifying, "
               f"{self.model_waited_s:.1f} waiting for reads and decodes "
               f"({100 * self.model_waited_fraction:.0f}%)"]
              if self.model_ran_s or self.model_waited_s else []),
            f"  reconciled           {'yes' if self.reconciles() else 'NO'}: listed "
            f"{self.listed} = written {self.written} + dead-lettered "
            f"{self.committed_dead_letters} + skipped {self.skipped_done}",
        ]
        lines += [f"    disagrees: {text}" for text in self.disagreements()]
        lines += [
            f"  predictions          {run_rows_uri(self.output_uri, PREDICTIONS_DIR, self.run_id)}",
            f"  dead letters         {run_rows_uri(self.output_uri, DEAD_LETTER_DIR, self.run_id)}",
            f"  graph                {self.graph_endpoint or 'off (no graph writes)'}",
        ]
        if self.report_uri:
            lines.append(f"  report               {self.report_uri}")
        if self.picture_uri:
            lines.append(f"  picture              {self.picture_uri}")
        return lines
