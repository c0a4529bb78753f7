from imagegraph.graph.load import writer_layout


def test_a_graph_load_leaves_a_task_slot_to_the_classification_beside_it():
    # (writers, connections_per_task, partitions, slots) -> (tasks, connections each)
    assert writer_layout(8, 1, 50, 200) == (8, 1)
    assert writer_layout(8, 1, 50, 8) == (7, 1)
    assert writer_layout(4, 1, 50, 2) == (1, 1)
    assert writer_layout(4, 4, 50, 1) == (1, 4)  # one slot: the load still runs


def test_connections_share_few_tasks_and_never_exceed_the_writers():
    assert writer_layout(32, 4, 500, 160) == (8, 4)
    assert writer_layout(4, 4, 4, 2) == (1, 4)  # local[2]: one task, four connections
    assert writer_layout(8, 4, 1, 160) == (1, 4)  # one partition: at most 4 in its task
    assert writer_layout(32, 4, 500, 5) == (4, 4)  # too few slots: fewer connections
    assert writer_layout(6, 4, 500, 160) == (2, 3)
    assert writer_layout(3, 8, 500, 160) == (1, 3)
