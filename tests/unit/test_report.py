from imagegraph.report import RunReport


def report(**counts) -> RunReport:
    return RunReport(run_id="r", input_uri="in", output_uri="out", model="m@1", **counts)


def test_reconciles_when_every_object_is_accounted_for():
    done = report(listed=10, classified=8, graph_written=7, graph_failed=1,
                  dead_lettered_by_reason={"empty object (0 bytes)": 2, "graph write failed": 1})
    assert done.dead_lettered == 3
    assert done.reconciles()


def test_does_not_reconcile_when_an_object_is_missing():
    assert not report(listed=10, classified=8, graph_written=8,
                      dead_lettered_by_reason={"empty object (0 bytes)": 1}).reconciles()
    assert not report(listed=10, classified=10, graph_written=9).reconciles()


def test_graph_off_needs_only_classification_to_reconcile():
    assert report(listed=3, classified=3, graph_enabled=False).reconciles()
