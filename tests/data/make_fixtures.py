"""Regenerate the checked-in results that the report, figure, compare and scaling tests read.

    .venv/bin/python tests/data/make_fixtures.py          # all studies, about a minute on 2 cores
    .venv/bin/python tests/data/make_fixtures.py compare  # one study

When: after a change to what a run records (the result in ``convbench/result.py`` and its schema, the
results-file line in ``convbench/pytest_plugin.py``, the throughput result), so that the tests read what
convbench writes today; commit the new files with that change. The tests compare the reports with the
numbers in these files, never with constants, so new numbers need no test edits.

Why files and not a session per test module: reading a report's input takes milliseconds, running the
suite that makes it takes 5-16 s, and the quick test loop (``pytest tests -m "not slow"``) would spend
most of its minute there. pytest-benchmark tests its own report code on checked-in JSON the same way.
One slow test (``tests/test_report.py::test_a_real_session_end_to_end``) still runs a suite and
reports it, so the live pipeline stays covered.

Each study is a suite in ``suites/`` that pytest runs in a fresh folder, the way a user runs one; its
``--benchmark-json`` becomes ``<study>.json`` and, where kept, its ``--convbench-results`` file
``<study>.jsonl``. The runs are tiny (10-30 steps, an evaluation every 5 or 15), so their curves are
short; the benchmark JSON is written without indentation and without the CPU's feature flags (of
pytest-benchmark's machine_info), so that every file stays within tens of KB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Study:
    """A suite, the pytest options it runs with, and what the tests need of it."""

    suite: str  # file in suites/
    options: tuple[str, ...] = ()
    keep: tuple[str, ...] = (".json", ".jsonl")  # the benchmark JSON, the results file
    failures: int = 0  # tests that are meant to fail


STUDIES = {
    "report": Study("report.py"),
    "seeded": Study("seeded.py", keep=(".json",)),
    "figures": Study("figures.py", keep=(".json",)),
    "compare": Study("compare.py"),
    "scaling": Study("scaling.py", ("--convbench-world-sizes", "1,2"), keep=(".json",)),
    # the results file alone holds the case that failed before training (the benchmark JSON has no entry for it)
    "failures": Study("failures.py", keep=(".jsonl",), failures=2),
}


def run_study(name: str, study: Study, folder: Path) -> tuple[Path, Path]:
    """Run the suite as ``test_<name>.py`` in ``folder``; return its benchmark JSON and results file."""
    (folder / f"test_{name}.py").write_text((HERE / "suites" / study.suite).read_text(encoding="utf-8"),
                                            encoding="utf-8")
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # its own rootdir
    env = {k: v for k, v in os.environ.items() if k not in ("CONVBENCH_SCALE", "PYTEST_ADDOPTS")}
    env["OMP_NUM_THREADS"] = "1"
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", f"test_{name}.py", "-q", "-p", "no:cacheprovider", "--benchmark-json",
         "benchmark.json", "--convbench-results", "results.jsonl", "--convbench-no-progress", *study.options],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    summary = completed.stdout.strip().splitlines()[-1] if completed.stdout.strip() else ""
    expected = f"{study.failures} failed" if study.failures else "passed"
    if (completed.returncode != (1 if study.failures else 0)) or expected not in summary:
        raise SystemExit(f"{name}: the suite did not end as planned ({summary!r}):\n{completed.stdout[-3000:]}"
                         f"{completed.stderr[-3000:]}")
    return folder / "benchmark.json", folder / "results.jsonl"


def trimmed(document: dict) -> dict:
    """The benchmark JSON without the CPU feature flags (a few KB that no convbench code reads)."""
    cpu = document.get("machine_info", {}).get("cpu")
    if isinstance(cpu, dict):
        cpu.pop("flags", None)
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="*", metavar="STUDY",
                        help=f"which to regenerate (default: all): {', '.join(STUDIES)}")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the files (default: %(default)s)")
    args = parser.parse_args(argv)
    for name in args.studies:
        if name not in STUDIES:
            parser.error(f"unknown study {name!r}; choose from {', '.join(STUDIES)}")
    for name in args.studies or STUDIES:
        study = STUDIES[name]
        folder = Path(tempfile.mkdtemp(prefix=f"convbench-{name}-"))
        try:
            json_path, jsonl_path = run_study(name, study, folder)
            if ".json" in study.keep:
                document = trimmed(json.loads(json_path.read_text(encoding="utf-8")))
                (args.out / f"{name}.json").write_text(json.dumps(document) + "\n", encoding="utf-8")
            if ".jsonl" in study.keep:
                shutil.copyfile(jsonl_path, args.out / f"{name}.jsonl")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"{name}: wrote {', '.join(name + suffix for suffix in study.keep)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
