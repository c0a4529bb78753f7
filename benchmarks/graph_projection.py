"""`make bench`, last step: hours to load 100 million images into Neptune, projected from the
figures `writer_bench.py` measured (in bench-results.json) and from published loader figures.

mergeV path: writers W = 2 x vCPUs (`graph.instance_vcpus`: Neptune runs twice its vCPUs in
queries at once), each one request in flight at the per-writer rate measured through Toxiproxy
at 2 and 10 ms of added round trip (`writer_batched_rtt<N>ms_elems_per_s` / (1 + top-3 edges)
images a second):  hours = images / (W x per-writer images/s) / 3600. The per-writer rate
includes the local Gremlin Server's time per request, not Neptune's, which no machine here can
measure; so the table also gives the time a request may take (queueing excluded: W equals
Neptune's query threads) for the load to finish in 6 hours:
t = W x 6 h / (images x requests per image), requests per image = 15 records / 200 a request.

Bulk path: records = images x records per image (15: `graph.elements`), loaded at R records a
second per vCPU:  hours = records / (R x vCPUs) / 3600, with R from a published load of 100
million triples in 1,169 s on a db.r5.4xlarge (16 vCPUs, parallelism HIGH, one loader thread a
core) [1], scaled linearly in vCPUs as the loader's threads are (`parallelism` [2]).

[1] https://zatoima.github.io/en/aws-neptune-bulkload-from-s3-gzip.html (a third-party
    measurement; AWS publishes no loader throughput)
[2] https://docs.aws.amazon.com/neptune/latest/userguide/load-api-reference-load.html

Prints the table for docs/BENCHMARKS.md and merges `projected_*_hours_*` keys into
bench-results.json.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from results import RESULTS_FILE, merge_results  # noqa: E402

IMAGES = 100_000_000
ELEMENTS_PER_IMAGE = 4          # the image vertex and its top-3 classified_as edges
RECORDS_PER_IMAGE = 15          # tests/unit/test_elements.py::test_records_per_image
RECORDS_PER_REQUEST = 200      # graph.records_per_request
GOAL_HOURS = 6
VCPUS = (4, 16, 64)
RTTS_MS = (2, 10)
LOADER_RECORDS_PER_S_PER_VCPU = 100_000_000 / 1169 / 16


def mergev_hours(vcpus: int, writer_images_per_s: float) -> float:
    return IMAGES / (2 * vcpus * writer_images_per_s) / 3600


def request_ms_for_goal(vcpus: int) -> float:
    requests = IMAGES * RECORDS_PER_IMAGE / RECORDS_PER_REQUEST
    return 2 * vcpus * GOAL_HOURS * 3600 / requests * 1000


def bulk_hours(vcpus: int) -> float:
    return IMAGES * RECORDS_PER_IMAGE / (LOADER_RECORDS_PER_S_PER_VCPU * vcpus) / 3600


def main() -> int:
    measured = json.loads(RESULTS_FILE.read_text())
    per_writer = {rtt: measured[f"writer_batched_rtt{rtt}ms_elems_per_s"] / ELEMENTS_PER_IMAGE
                  for rtt in RTTS_MS}
    figures = {}
    per_request_ms = {rtt: 1000 / (per_writer[rtt] * RECORDS_PER_IMAGE / RECORDS_PER_REQUEST)
                      for rtt in RTTS_MS}
    print("| writer vCPUs | writers | " + " | ".join(
        f"mergeV at {rtt} ms ({per_writer[rtt]:.0f} images/s a writer, "
        f"{per_request_ms[rtt]:.0f} ms a request)" for rtt in RTTS_MS)
        + f" | mergeV in {GOAL_HOURS} h if a request takes at most"
        + f" | bulk ({LOADER_RECORDS_PER_S_PER_VCPU:,.0f} records/s a vCPU) |")
    print("| ---: | ---: | " + " | ".join("---:" for _ in RTTS_MS) + " | ---: | ---: |")
    for vcpus in VCPUS:
        row = []
        for rtt in RTTS_MS:
            hours = mergev_hours(vcpus, per_writer[rtt])
            figures[f"projected_mergev_hours_vcpus_{vcpus}_rtt{rtt}ms"] = round(hours, 1)
            row.append(f"{hours:.1f} h")
        figures[f"projected_bulk_hours_vcpus_{vcpus}"] = round(bulk_hours(vcpus), 1)
        print(f"| {vcpus} | {2 * vcpus} | " + " | ".join(row)
              + f" | {request_ms_for_goal(vcpus):.0f} ms | {bulk_hours(vcpus):.1f} h |")
    merge_results(figures, "projection_inputs",
                  f"{IMAGES:,} images, {RECORDS_PER_IMAGE} records each, writers 2 x vCPUs, "
                  f"per-writer rates from writer_batched_rtt*ms_elems_per_s / "
                  f"{ELEMENTS_PER_IMAGE}, loader {LOADER_RECORDS_PER_S_PER_VCPU:.0f} "
                  "records/s per vCPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
