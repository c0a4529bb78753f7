"""The run report: what happened to every listed object, reconciled."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunReport:
    """Counts of one inference run. Every listed object is classified or dead-lettered, and
    every classified one is written to the graph or dead-lettered by the graph stage."""

    run_id: str
    input_uri: str
    output_uri: str
    model: str
    listed: int = 0
    classified: int = 0
    dead_lettered_by_reason: dict = field(default_factory=dict)
    graph_written: int = 0
    graph_failed: int = 0
    vertices_written: int = 0
    edges_written: int = 0
    graph_requests: int = 0
    graph_retries: int = 0
    graph_enabled: bool = True
    elapsed_s: float = 0.0

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_lettered_by_reason.values())

    @property
    def images_per_s(self) -> float:
        return self.listed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def reconciles(self) -> bool:
        """listed = classified + undecodable, and (graph on) classified = written + failed."""
        decode_dead = self.dead_lettered - self.graph_failed
        ok = self.listed == self.classified + decode_dead
        if self.graph_enabled:
            ok = ok and self.classified == self.graph_written + self.graph_failed
        return ok

    def summary_lines(self) -> list[str]:
        lines = [
            f"run {self.run_id}: {self.input_uri} -> {self.output_uri} with {self.model}",
            f"  objects listed       {self.listed}",
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
            lines.append("  graph writes         off")
        lines += [
            f"  elapsed              {self.elapsed_s:.1f} s ({self.images_per_s:.1f} images/s)",
            f"  reconciled           {'yes' if self.reconciles() else 'NO'}",
        ]
        return lines
