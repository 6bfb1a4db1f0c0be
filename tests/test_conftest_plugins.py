"""Components declared in a test folder's conftest.py, without packaging: in the session and its workers."""

from __future__ import annotations

import json
import textwrap

import pytest
from readme_text import code_block
from suite_runs import run_suite

from convbench.registry import get_registry

pytest_plugins = ["pytester"]

CONFTEST = code_block("# suites/conftest.py")  # the README's example, so that it stays true


SUITE = '''
import pytest
from convbench import Case, get_registry

CASE = Case(model="two_layer", model_kwargs={"width": 8}, dataset="mnist-5k", optimizer="sgd", lr=0.5, batch_size=100,
            steps=20, eval_every=10, eval_train_samples=200)

@pytest.mark.parametrize("case", [CASE.param(), CASE.replace(world_size=2).param()])
def test_two_layer(convergence, case):
    assert get_registry().get("model", "two_layer").plugin == "conftest:conftest.py"
    result = convergence(case)
    assert result.curves["train"]["loss"][-1] < result.curves["train"]["loss"][0]
'''


@pytest.mark.slow
def test_a_conftest_registers_components_for_the_session_and_its_workers(tmp_path):
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST), encoding="utf-8")
    out = run_suite(tmp_path, SUITE)
    runs = {b["extra_info"]["convbench"]["world_size"]: b["extra_info"]["convbench"]
            for b in json.loads(out.read_text())["benchmarks"]}
    assert set(runs) == {1, 2}  # both trained, the two-process one in workers that imported conftest.py
    assert runs[2]["final"]["test_accuracy"] == pytest.approx(runs[1]["final"]["test_accuracy"], abs=0.01)


def test_conftest_components_end_with_their_session(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite='''
        from convbench import get_registry

        def test_registered():
            assert get_registry().get("model", "two_layer").defaults == {"width": 64}
    ''')
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert "two_layer" not in get_registry().names("model")


def test_a_conftest_without_convbench_hooks_is_no_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("import pytest\n\n@pytest.fixture\ndef answer():\n    return 42\n")
    pytester.makepyfile(test_suite='''
        from convbench import get_registry

        def test_plugins(answer):
            assert not [name for name in get_registry().plugins if name.startswith("conftest:")]
    ''')
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
