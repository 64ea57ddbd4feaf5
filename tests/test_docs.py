"""Keep the docs honest: every command and every store/encoder name is documented."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from clipseek.cli import cli
from clipseek.plugins import get_registry

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ARCH = (ROOT / "ARCHITECTURE.md").read_text()


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_is_in_the_readme(command: str) -> None:
    assert f"clipseek {command}" in README


@pytest.mark.parametrize("store", ["local", "memory", "milvus"])
def test_built_in_stores_are_documented(store: str) -> None:
    assert store in get_registry().stores
    assert f"`{store}`" in README and f"`{store}`" in ARCH


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest -q" in README and ".venv/bin/python -m pytest -q" in ci
    assert "pip install torch==2.13.0 -e '.[all,test]'" in README
    assert "pip install -q torch==2.13.0 -e '.[all,test]'" in ci


def _all_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], click.Command]:
    out: dict[tuple[str, ...], click.Command] = {}
    for name, cmd in group.commands.items():
        out[prefix + (name,)] = cmd
        if isinstance(cmd, click.Group):
            out.update(_all_commands(cmd, prefix + (name,)))
    return out


def _option_names(cmd: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for p in cmd.params:
        names.update(o.split("/")[0] for o in (*p.opts, *p.secondary_opts))
    return names


COMMANDS = _all_commands()
GROUP_OPTIONS = _option_names(cli)
README_LINES = [
    line.split("#")[0].strip()
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    for line in block.splitlines()
    if line.strip().startswith("clipseek ")
]


@pytest.mark.parametrize("line", README_LINES)
def test_readme_examples_use_real_commands_and_options(line: str) -> None:
    words = shlex.split(line)[1:]
    path: tuple[str, ...] = ()
    while words and path + (words[0],) in COMMANDS:
        path += (words.pop(0),)
    assert path, f"README example names no clipseek command: {line}"
    known = _option_names(COMMANDS[path]) | GROUP_OPTIONS
    used = {w.split("=")[0] for w in words if w.startswith("-") and not re.fullmatch(r"-\d.*", w)}
    assert used <= known, f"{line}: {sorted(used - known)} not in `clipseek {' '.join(path)} --help`"


def test_options_named_in_readme_prose_exist() -> None:
    everywhere = set(GROUP_OPTIONS)
    for cmd in COMMANDS.values():
        everywhere |= _option_names(cmd)
    pip_options = {"--extra-index-url", "--no-deps"}  # the install lines' own options
    named = set(re.findall(r"`(--[a-z][a-z0-9-]*)", README)) - pip_options
    assert named <= everywhere, f"README names options no command has: {sorted(named - everywhere)}"


def test_readme_says_int8_towers_are_written_by_default() -> None:
    export = COMMANDS[("model", "export")]
    int8 = next(p for p in export.params if p.name == "int8")
    assert int8.default is True
    assert "`--no-int8`" in README
