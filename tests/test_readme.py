"""The README stays true: its plugin example works as written, and it documents every option and hook."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from readme_text import README, code_block

from convbench import hookspecs
from convbench.cli import build_parser
from convbench.registry import HOOKS

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


@pytest.fixture
def readme_plugin(tmp_path, monkeypatch):
    """The README's example package, installed as a distribution with its entry point."""
    project = tomllib.loads(code_block("# pyproject.toml"))
    entry_points = project["project"]["entry-points"]["convbench"]
    (tmp_path / "convbench_lion.py").write_text(code_block("# convbench_lion.py"))
    dist_info = tmp_path / "convbench_lion-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: convbench-lion\nVersion: 0.1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[convbench]\n{lines}")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("CONVBENCH_LOAD_PLUGINS", raising=False)
    return entry_points


def test_readme_plugin_example_registers_through_its_entry_point(readme_plugin):
    from convbench.registry import load_registry

    registry = load_registry()
    assert registry.problems == []
    assert registry.get("optimizer", "lion").plugin == "lion"
    assert registry.get("model", "tiny_cnn").defaults == {"width": 8}


def test_readme_plugin_test_example_passes(readme_plugin):
    namespace: dict = {}
    exec(compile(code_block("import convbench_lion"), "README-plugin-test", "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert len(tests) == 1
    tests[0]()


def test_readme_documents_every_hook():
    for hook_name in HOOKS.values():
        assert hasattr(hookspecs, hook_name)
        assert f"`{hook_name}(register)`" in README, hook_name


def test_readme_documents_every_pytest_option():
    source = (Path(__file__).resolve().parents[1] / "convbench" / "pytest_plugin.py").read_text()
    options = set(re.findall(r'addoption\("(--convbench-[a-z-]+)"', source))
    assert options, "no options found"
    for option in options:
        assert f"`{option}" in README, option


def test_readme_documents_every_cli_command_and_option():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        assert f"convbench {name}" in README, name
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert flag in README, (name, flag)
    assert "convbench --version" in README


def test_readme_plugin_example_is_the_example_package():
    example = Path(__file__).resolve().parents[1] / "examples" / "convbench-lion"
    assert code_block("# convbench_lion.py") == (example / "convbench_lion.py").read_text()
    assert code_block("# pyproject.toml") == (example / "pyproject.toml").read_text()
