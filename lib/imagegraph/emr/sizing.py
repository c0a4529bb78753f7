"""Executor and driver containers sized from the nodes' instance type, without AWS.

The supported families are x86_64 general purpose (m), compute (c) and memory (r) types,
whose vCPUs follow the size (large 2, xlarge 4, 2xlarge 8, ...) and whose memory is a fixed
number of GiB per vCPU. YARN on EMR offers a node less than its memory
(`yarn.nodemanager.resource.memory-mb`: 12288 MiB of m5.xlarge's 16 GiB, 57344 of
m5.4xlarge's 64 GiB); `YARN_SHARE` of the memory is at most that for every size here.

An executor has `EXECUTOR_CORES` cores (the node's vCPUs when fewer), so `spark.task.cpus`
2 runs two Python workers; its overhead holds those workers (`PYTHON_WORKER_MIB` each: a
MobileNetV2 worker peaked at 1.5 GiB on small JPEGs and 1.94 GiB on phone uploads, measured by
`benchmarks/inference_bench.py`) and the JVM heap gets the rest of the node's share.
GPU and accelerator types are refused: the packed environment runs tensorflow-cpu.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from imagegraph.errors import JobError

GIB_PER_VCPU = {family: gib for gib, families in (
    (2, ("c5", "c5a", "c6i", "c6a", "c7i", "c7a")),
    (4, ("m5", "m5a", "m6i", "m6a", "m7i", "m7a")),
    (8, ("r5", "r5a", "r6i", "r6a", "r7i", "r7a"))) for family in families}
SIZE_VCPUS = {"large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16, "8xlarge": 32,
              "12xlarge": 48, "16xlarge": 64, "24xlarge": 96}
YARN_SHARE = 0.75
EXECUTOR_CORES = 4
TASK_CPUS = 2
PYTHON_WORKER_MIB = 2048
MIN_HEAP_MIB = 2048
# Graviton (arm64) instance types: a family and generation, then attributes with a `g`
# (m6g, c7gn, r8gd, t4g, im4gn, g5g); g4dn, m7i-flex and inf2 are x86_64.
_GRAVITON_TYPE = re.compile(r"^[a-z]+\d+[a-z]*g[a-z]*\.")
_GPU_TYPE = re.compile(r"^(g\d|p\d|inf\d|trn\d|dl\d|vt\d|f\d)")


@dataclass(frozen=True)
class Executor:
    """One executor container on a node: `cores`, JVM `memory_mib` and `overhead_mib`, and how
    many fit the node (`per_node`)."""

    cores: int
    memory_mib: int
    overhead_mib: int
    per_node: int

    def options(self) -> list[str]:
        """The spark-submit `--conf`s of this executor."""
        return ["--conf", f"spark.executor.cores={self.cores}",
                "--conf", f"spark.executor.memory={self.memory_mib}m",
                "--conf", f"spark.executor.memoryOverhead={self.overhead_mib}m"]


# EMR Serverless: a 4-vCPU worker holds up to 30 GB; the measured 5 GiB heap and two workers.
SERVERLESS_EXECUTOR = Executor(EXECUTOR_CORES, 5120, 2 * PYTHON_WORKER_MIB, 1)


def graviton_types(types: list[str]) -> list[str]:
    """The Graviton (arm64) instance types among `types`."""
    return [name for name in types if _GRAVITON_TYPE.match(name)]


def node_resources(instance_type: str) -> tuple[int, int]:
    """`(vCPUs, YARN MiB)` of a node of `instance_type`; `JobError` for a Graviton or GPU type
    or one outside the table."""
    if _GRAVITON_TYPE.match(instance_type):
        raise JobError(f"instance type {instance_type} is Graviton (arm64): tensorflow-cpu has "
                       "no aarch64 wheel and the packed environment is x86_64; use x86_64 types "
                       "(m6i, m7i, c7i, r7i, ...)")
    if _GPU_TYPE.match(instance_type):
        raise JobError(f"instance type {instance_type} is a GPU/accelerator type: the jobs run "
                       "tensorflow-cpu; use an m, c or r type (m6i, c7i, r7i, ...)")
    family, _, size = instance_type.partition(".")
    if family not in GIB_PER_VCPU or size not in SIZE_VCPUS:
        raise JobError(f"instance type {instance_type} is not one the launcher sizes executors "
                       f"for: families {', '.join(GIB_PER_VCPU)}; sizes "
                       f"{', '.join(SIZE_VCPUS)}")
    vcpus = SIZE_VCPUS[size]
    return vcpus, int(vcpus * GIB_PER_VCPU[family] * 1024 * YARN_SHARE)


def executor_for(instance_types: list[str]) -> Executor:
    """The executor that fits a node of every type in `instance_types` (a fleet's types);
    `JobError` when one is too small for an executor's Python workers and heap."""
    sized = []
    for name in instance_types:
        vcpus, yarn_mib = node_resources(name)
        cores = min(EXECUTOR_CORES, vcpus)
        per_node = vcpus // cores
        container = yarn_mib // per_node // 512 * 512
        overhead = cores // TASK_CPUS * PYTHON_WORKER_MIB
        if container - overhead < MIN_HEAP_MIB:
            raise JobError(f"instance type {name} is too small: {yarn_mib} MiB for YARN leave "
                           f"less than {MIN_HEAP_MIB} MiB of heap beside {overhead} MiB of "
                           "Python workers")
        sized.append(Executor(cores, container - overhead, overhead, per_node))
    return min(sized, key=lambda e: (e.cores, e.memory_mib))


def check_driver_fits(instance_types: list[str], driver_mib: int) -> None:
    """`JobError` when a driver container of `driver_mib` (memory and overhead) does not fit
    the YARN memory of a core node of each of `instance_types` (the application master runs
    on a core node)."""
    for name in instance_types:
        _, yarn_mib = node_resources(name)
        if driver_mib > yarn_mib:
            raise JobError(f"the driver's container, {driver_mib} MiB (steps.driver_memory_mb "
                           f"+ steps.driver_overhead_mb), does not fit a {name} core node's "
                           f"{yarn_mib} MiB for YARN")
