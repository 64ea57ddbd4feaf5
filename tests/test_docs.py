"""Keep the docs honest: every command and every store/encoder name is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipseek.cli import cli
from clipseek.plugins import get_registry

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ARCH = (ROOT / "ARCHITECTURE.md").read_text()


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_is_in_the_readme(command: str) -> None:
    assert f"clipseek {command}" in README


@pytest.mark.parametrize("store", ["local", "memory"])
def test_built_in_stores_are_documented(store: str) -> None:
    assert store in get_registry().stores
    assert f"`{store}`" in README and f"`{store}`" in ARCH


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest -q" in README and ".venv/bin/python -m pytest -q" in ci
    assert "pip install torch==2.13.0 -e '.[all,test]'" in README
    assert "pip install -q torch==2.13.0 -e '.[all,test]'" in ci
