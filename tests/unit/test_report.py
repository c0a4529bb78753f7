from imagegraph.report import RunReport


def report(**counts) -> RunReport:
    return RunReport(run_id="r", source="s3://b/in/", output_uri="out", model="m@1", **counts)


def test_reconciles_when_every_object_is_accounted_for():
    done = report(listed=12, skipped_done=2, classified=8, graph_written=7, graph_failed=1,
                  dead_lettered_by_reason={"empty object (0 bytes)": 2, "graph write failed": 1})
    assert done.dead_lettered == 3 and done.written == 7 and done.processed == 10
    assert done.reconciles()
    assert done.failed_fraction == 0.3
    assert done.to_dict()["reconciled"] is True
    assert done.summary_lines()[-1] == (
        "  reconciled           yes: listed 12 = written 7 + dead-lettered 3 + skipped 2")


def test_does_not_reconcile_when_an_object_is_missing():
    assert not report(listed=10, classified=8, graph_written=8,
                      dead_lettered_by_reason={"empty object (0 bytes)": 1}).reconciles()
    assert not report(listed=10, classified=10, graph_written=9).reconciles()
    assert not report(listed=10, skipped_done=1, classified=10, graph_written=10).reconciles()


def test_graph_off_counts_predictions_as_written():
    off = report(listed=3, classified=3, graph_enabled=False)
    assert off.written == 3 and off.reconciles()
    assert "  written              3 (graph writes off)" in off.summary_lines()


def test_nothing_processed_is_not_a_failure():
    assert report(listed=5, skipped_done=5).failed_fraction == 0.0
