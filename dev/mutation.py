"""Mutation testing of the pure modules against the unit tests (`make mutation`).

Flow: copy lib/imagegraph, tests/, dev/ and conf/ into build/mutation/work (mutmut names a mutant by
its file's path, so the package must sit at the top of the directory it runs in to be imported
as `imagegraph`), write mutmut's configuration there (setup.cfg: the modules of MUTATED, the
unit tests of UNIT_TESTS), run `mutmut run` with one worker process, then read each mutant's
status with `mutmut results --all` and write the score and every surviving mutant to
build/mutation/results.txt and to the generated section of docs/TESTING.md.

Run with the project's venv from the repository root: `.venv/bin/python dev/mutation.py`;
`--module imagegraph/imaging/decode.py` (repeatable) mutates only the modules named, and then
writes results.txt only: docs/TESTING.md records a run over all of MUTATED.
"""
import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation" / "work"
RESULTS = ROOT / "build" / "mutation" / "results.txt"
TESTING_DOC = ROOT / "docs" / "TESTING.md"
BEGIN_MARK = "<!-- mutation results: written by dev/mutation.py -->"
END_MARK = "<!-- end of mutation results -->"

# The pure modules (no Spark, no servers): decoding, selection and shards, keys, graph elements
# and traversals, retry classification, pacing, the report, the configuration, the run lease's
# naming and overlap. selection.shard_column and run_lease's S3/file leases are not pure: the
# equivalent and not-unit-testable mutants they leave are listed in docs/TESTING.md.
MUTATED = (
    "imagegraph/imaging/decode.py",
    "imagegraph/storage/selection.py",
    "imagegraph/storage/sources.py",
    "imagegraph/graph/elements.py",
    "imagegraph/graph/traversals.py",
    "imagegraph/graph/retry.py",
    "imagegraph/graph/pacing.py",
    "imagegraph/runs/report.py",
    "imagegraph/config.py",
    "imagegraph/runs/lease.py",
)
UNIT_TESTS = (
    "tests/unit/test_config.py",
    "tests/unit/test_decode.py",
    "tests/unit/test_elements.py",
    "tests/unit/test_key_parsing.py",
    "tests/unit/test_report.py",
    "tests/unit/test_retry.py",
    "tests/unit/test_shard_overlap.py",
    "tests/unit/test_selection.py",
    "tests/unit/test_spark_session.py",
    "tests/unit/test_traversals.py",
)
UNIT_TESTS_LEFT_OUT = ("tests/unit/test_selection.py::test_shard_column_is_shard_of",)
"""Unit tests that start Spark: a forked mutant's test cannot share the parent's JVM."""
NOT_UNIT_TESTED = {
    "imagegraph.storage.selection": (
        ("shard_column", "select_objects", "_require", "_list_hadoop_prefix", "_read_table",
         "_read_manifest", "_inventory_key", "_read_inventory"),
        "Spark expressions and reads: tests/unit/test_selection.py::"
        "test_shard_column_is_shard_of (Spark), tests/integration/test_object_keys.py, "
        "test_pipeline.py"),
    "imagegraph.storage.sources": (
        ("canonical_uri", "read_images"),
        "Spark expressions and reads: tests/integration/test_object_keys.py"),
    "imagegraph.runs.lease": (
        ("_S3Store", "_FileStore", "RunLease", "take_lease", "_take", "_refuse_overlapping",
         "lease_store", "_now"),
        "S3 conditional writes, files under flock, the clock: "
        "tests/integration/test_run_lease.py"),
}
"""Functions of the mutated modules that are not pure, by module: (names, where they are
tested). Their mutants are counted apart from the score."""
KILLED_STATUSES = ("killed", "timeout", "segfault")  # the tests noticed the mutant


@dataclass(frozen=True)
class Score:
    """Mutant counts of one run: killed (failed a test, timed out or crashed), survived
    (every test passed), untested (no unit test calls the function), skipped (mutmut could not
    run it), not_unit_tested (in a function of NOT_UNIT_TESTED, outside the score); survivors
    are the names of the survived and untested mutants."""
    killed: int
    survived: int
    untested: int
    skipped: int
    not_unit_tested: int
    survivors: tuple[str, ...]

    @property
    def percent_killed(self) -> float:
        """Killed mutants over killed + survived + untested, in percent."""
        tested = self.killed + self.survived + self.untested
        return 100.0 * self.killed / tested if tested else 100.0


def stage_work_directory(modules: tuple[str, ...]) -> None:
    """Copy the sources and tests into WORK and write mutmut's setup.cfg there, to mutate
    `modules` (paths as in MUTATED)."""
    WORK.mkdir(parents=True, exist_ok=True)
    for source, target in ((ROOT / "lib" / "imagegraph", WORK / "imagegraph"),
                           (ROOT / "tests", WORK / "tests"), (ROOT / "dev", WORK / "dev"),
                           (ROOT / "conf", WORK / "conf")):
        shutil.copytree(source, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    lines = ["[mutmut]", "source_paths = imagegraph", "only_mutate ="]
    lines += [f"    {module}" for module in modules]
    lines += ["also_copy =", "    dev", "    conf", "pytest_add_cli_args_test_selection ="]
    lines += [f"    {tests}" for tests in UNIT_TESTS]
    lines += ["pytest_add_cli_args =", "    -p", "    no:cacheprovider"]
    lines += [f"    --deselect={test}" for test in UNIT_TESTS_LEFT_OUT] + [""]
    (WORK / "setup.cfg").write_text("\n".join(lines))


def run_mutmut() -> None:
    """`mutmut run` in WORK with one worker process (the machine's cores are shared), from
    scratch: mutmut reruns a mutant only when its function changed, so a result kept from an
    earlier run would ignore the tests added since."""
    shutil.rmtree(WORK / "mutants", ignore_errors=True)
    subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", "1"], cwd=WORK,
                   check=True)  # mutmut fails when the unit tests fail without a mutant


def read_score() -> Score:
    """Each mutant's status from `mutmut results --all true` (lines `name: status`)."""
    listing = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                             cwd=WORK, check=True, capture_output=True, text=True).stdout
    statuses = {name: status for name, status in
                re.findall(r"^\s*(\S+__mutmut_\d+): (.+?)\s*$", listing, re.MULTILINE)
                if not is_not_unit_tested(name)}
    counts = {status: 0 for status in ("killed", "survived", "untested", "skipped")}
    for status in statuses.values():
        key = "killed" if status in KILLED_STATUSES else (
            status if status in counts else "untested" if status == "no tests" else "skipped")
        counts[key] += 1
    counts["not_unit_tested"] = len(re.findall(r"__mutmut_\d+: ", listing)) - len(statuses)
    survivors = tuple(sorted(name for name, status in statuses.items()
                             if status in ("survived", "no tests")))
    return Score(survivors=survivors, **counts)


def is_not_unit_tested(mutant: str) -> bool:
    """Whether `mutant` (`imagegraph.storage.selection.x__read_table__mutmut_3`, or with a class,
    `imagegraph.runs.lease.xǁRunLeaseǁrenew__mutmut_1`) is in a function of NOT_UNIT_TESTED."""
    module, _, function = mutant.partition("__mutmut_")[0].rpartition(".")
    name = function.split("ǁ")[1] if "ǁ" in function else function.removeprefix("x_")
    return name in NOT_UNIT_TESTED.get(module, ((), ""))[0]


def score_line(score: Score) -> str:
    return (f"mutation score: {score.percent_killed:.1f}% killed ({score.killed} killed, "
            f"{score.survived} survived, {score.untested} untested, {score.skipped} skipped; "
            f"{score.not_unit_tested} more in functions that are not pure, outside the score)")


def results_text(score: Score, modules: tuple[str, ...]) -> str:
    """The score of mutating `modules` and the surviving mutants by name (inspect one with
    `mutmut show NAME` in WORK)."""
    lines = [score_line(score), f"modules: {', '.join(modules)}",
             f"surviving mutants ({len(score.survivors)}):"]
    lines += [f"- {name}" for name in score.survivors]
    return "\n".join(lines) + "\n"


def survivors_by_function(score: Score) -> list[str]:
    """`decode.x__resize: 11, 18`: each function's surviving mutant numbers."""
    numbers: dict[str, list[str]] = {}
    for name in score.survivors:
        function, _, number = name.removeprefix("imagegraph.").partition("__mutmut_")
        numbers.setdefault(function, []).append(number)
    return [f"{function}: {', '.join(sorted(found, key=int))}"
            for function, found in sorted(numbers.items())]


def write_results(score: Score, modules: tuple[str, ...]) -> None:
    """RESULTS, and, for a run over all of MUTATED, the section between the marks of
    TESTING_DOC."""
    RESULTS.write_text(results_text(score, modules))
    if modules != MUTATED:
        return
    doc = TESTING_DOC.read_text()
    head, _, rest = doc.partition(BEGIN_MARK)
    _, _, tail = rest.partition(END_MARK)
    lines = [score_line(score), f"surviving mutants ({len(score.survivors)}), by function:"]
    lines += survivors_by_function(score)
    section = f"{BEGIN_MARK}\n```\n" + "\n".join(lines) + f"\n```\n{END_MARK}"
    TESTING_DOC.write_text(head + section + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description="Mutation testing of the pure modules.")
    parser.add_argument("--module", action="append", choices=MUTATED,
                        help="mutate only this module of MUTATED (repeatable); default: all")
    modules = tuple(parser.parse_args().module or MUTATED)
    stage_work_directory(modules)
    run_mutmut()
    score = read_score()
    write_results(score, modules)
    print(results_text(score, modules), end="")


if __name__ == "__main__":
    main()
