"""Executor and driver sizing from the nodes' instance type: every family and size of the
table gets executors that fit its node, GPU and Graviton types are refused in one line, and a
rendered step carries the sizes."""
import pytest

from imagegraph.emr import sizing
from imagegraph.errors import JobError

TYPES = [f"{family}.{size}" for family in sizing.GIB_PER_VCPU for size in sizing.SIZE_VCPUS
         if size != "large" or sizing.GIB_PER_VCPU[family] >= 4]


@pytest.mark.parametrize("name", TYPES)
def test_every_supported_type_gets_executors_that_fit_its_node(name):
    vcpus, yarn_mib = sizing.node_resources(name)
    executor = sizing.executor_for([name])
    container = executor.memory_mib + executor.overhead_mib
    assert executor.per_node * container <= yarn_mib
    assert executor.per_node * executor.cores == vcpus  # every vCPU has a core, none twice
    assert executor.cores % sizing.TASK_CPUS == 0
    assert executor.overhead_mib == executor.cores // sizing.TASK_CPUS * sizing.PYTHON_WORKER_MIB
    assert executor.memory_mib >= sizing.MIN_HEAP_MIB
    assert container % 512 == 0


def test_the_node_types_of_the_issue_are_sized_to_their_vcpus():
    """c6i.2xlarge: two executors (not one with half the vCPUs idle); r6i.2xlarge: two, each
    with more heap (not more 4-core executors than vCPUs)."""
    assert sizing.executor_for(["m6i.2xlarge"]) == sizing.Executor(4, 8192, 4096, 2)
    assert sizing.executor_for(["c6i.2xlarge"]) == sizing.Executor(4, 2048, 4096, 2)
    assert sizing.executor_for(["r6i.2xlarge"]) == sizing.Executor(4, 20480, 4096, 2)
    assert sizing.executor_for(["m6i.large"]) == sizing.Executor(2, 4096, 2048, 1)
    # a fleet of several types: the executor that fits the smallest node
    assert sizing.executor_for(["r6i.2xlarge", "m6i.2xlarge"]) == \
        sizing.executor_for(["m6i.2xlarge"])


@pytest.mark.parametrize("name", ["g4dn.xlarge", "g5.2xlarge", "g6.4xlarge", "p3.2xlarge",
                                  "p4d.24xlarge", "p5.48xlarge", "inf2.xlarge", "trn1.2xlarge"])
def test_gpu_types_are_refused_in_one_line(name):
    with pytest.raises(JobError, match=f"^instance type {name} is a GPU/accelerator type: the "
                                       "jobs run tensorflow-cpu"):
        sizing.executor_for([name])


@pytest.mark.parametrize("name, message", [
    ("m7g.2xlarge", r"is Graviton \(arm64\)"), ("t3.xlarge", "is not one the launcher sizes"),
    ("m6i.metal", "is not one the launcher sizes"), ("c6i.large", "is too small")])
def test_other_types_are_refused_with_the_reason(name, message):
    with pytest.raises(JobError, match=message):
        sizing.executor_for([name])


def test_a_driver_larger_than_a_core_node_is_refused():
    sizing.check_driver_fits(["m6i.2xlarge"], 8192)
    with pytest.raises(JobError, match="does not fit a c6i.xlarge core node's 6144 MiB"):
        sizing.check_driver_fits(["m6i.2xlarge", "c6i.xlarge"], 8192)
