"""The run report: what happened to every listed object, reconciled."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class RunReport:
    """Counts of one inference run. Every listed object is written (to the graph, or with the
    graph off to predictions/), dead-lettered, or skipped as done by an earlier run
    (`--resume`); every classified object is written or dead-lettered by the graph stage."""

    run_id: str
    source: str
    output_uri: str
    model: str
    shard: str = ""
    resume: bool = False
    started_at: str = ""
    listed: int = 0
    skipped_done: int = 0
    classified: int = 0
    dead_lettered_by_reason: dict = field(default_factory=dict)
    graph_written: int = 0
    graph_failed: int = 0
    vertices_written: int = 0
    edges_written: int = 0
    graph_requests: int = 0
    graph_retries: int = 0
    graph_enabled: bool = True
    chunks: int = 0
    elapsed_s: float = 0.0

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_lettered_by_reason.values())

    @property
    def written(self) -> int:
        return self.graph_written if self.graph_enabled else self.classified

    @property
    def processed(self) -> int:
        """Objects this run worked on: listed but not skipped."""
        return self.listed - self.skipped_done

    @property
    def failed_fraction(self) -> float:
        return self.dead_lettered / self.processed if self.processed else 0.0

    @property
    def images_per_s(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def reconciles(self) -> bool:
        """listed = written + dead-lettered + skipped, and (graph on) classified = written to
        the graph + failed there."""
        ok = self.listed == self.written + self.dead_lettered + self.skipped_done
        if self.graph_enabled:
            ok = ok and self.classified == self.graph_written + self.graph_failed
        return ok

    def to_dict(self) -> dict:
        """The report as JSON-ready data, with the derived figures."""
        return {**asdict(self), "written": self.written, "dead_lettered": self.dead_lettered,
                "failed_fraction": self.failed_fraction, "reconciled": self.reconciles()}

    def summary_lines(self) -> list[str]:
        shard = f", shard {self.shard}" if self.shard else ""
        lines = [
            f"run {self.run_id}: {self.source}{shard} -> {self.output_uri} with {self.model}",
            f"  objects listed       {self.listed}",
            f"  skipped as done      {self.skipped_done}"
            + ("" if self.resume else " (no --resume)"),
            f"  classified           {self.classified}",
            f"  dead-lettered        {self.dead_lettered}",
        ]
        lines += [f"    {count:6d}  {reason}"
                  for reason, count in sorted(self.dead_lettered_by_reason.items())]
        if self.graph_enabled:
            lines += [
                f"  written to graph     {self.graph_written} images "
                f"({self.vertices_written} vertices, {self.edges_written} edges, "
                f"{self.graph_requests} requests, {self.graph_retries} retries)",
            ]
        else:
            lines.append(f"  written              {self.classified} (graph writes off)")
        lines += [
            f"  elapsed              {self.elapsed_s:.1f} s ({self.images_per_s:.1f} images/s, "
            f"{self.chunks} chunk(s))",
            f"  reconciled           {'yes' if self.reconciles() else 'NO'}: listed "
            f"{self.listed} = written {self.written} + dead-lettered {self.dead_lettered} "
            f"+ skipped {self.skipped_done}",
        ]
        return lines
