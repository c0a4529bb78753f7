from imagegraph.graph.load import writer_tasks


def test_a_graph_load_leaves_a_task_slot_to_the_classification_beside_it():
    assert writer_tasks(8, 200) == 8
    assert writer_tasks(8, 8) == 7
    assert writer_tasks(4, 2) == 1
    assert writer_tasks(4, 1) == 1  # one slot: the load still runs
