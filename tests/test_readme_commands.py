"""Every command line in the READMEs works as written.

Each ``uv run <package> ...`` line (also under ``accelerate launch -m <import>`` or ``torchrun ... -m``) of a
fenced shell block is parsed by the package's click CLI: the subcommands exist, every option exists and its
value has the right type, required options are there. Where the line has no placeholder (an upper-case word
like ``DATA`` or ``RUN_DIR``) and the command has ``--dry-run``, it is run with ``--dry-run`` too (the whole
config validated, nothing written).
"""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from diffcore.testing import shared_data_root

ROOT = Path(__file__).resolve().parents[1]
READMES = [ROOT / "README.md", ROOT / "shared" / "README.md", *sorted(ROOT.glob("packages/*/README.md"))]
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9_]{2,}\b")


def _entry_points() -> dict[str, str]:
    """Console script → ``module:function`` for every package, and import name → the same."""
    entries = {}
    for pyproject in ROOT.glob("packages/*/pyproject.toml"):
        scripts = tomllib.loads(pyproject.read_text())["project"].get("scripts", {})
        for name, target in scripts.items():
            entries[name] = target
            entries[target.split(".")[0]] = target
    return entries


ENTRIES = _entry_points()


def _blocks(readme: Path) -> list[list[str]]:
    """The logical lines (continuations joined, comments dropped) of each fenced shell block."""
    blocks, current = [], None
    for raw in readme.read_text().splitlines():
        fence = raw.strip()
        if fence.startswith("```"):
            if current is not None:
                blocks.append(current)
                current = None
            elif fence in ("```bash", "```sh", "```shell"):
                current = []
            continue
        if current is not None:
            current.append(raw)
    logical = []
    for lines in blocks:
        joined = "\n".join(lines).replace("\\\n", " ")
        logical.append([line.split(" #")[0].strip() for line in joined.splitlines()
                        if line.strip() and not line.strip().startswith("#")])
    return logical


def _expand(line: str, loops: dict[str, list[str]], positional: str | None = None) -> list[str]:
    """One line per combination of the shell loop variables it uses; other ``$VAR`` become placeholders.

    ``positional`` is a loop variable split into ``$1 $2 …`` by ``set -- $var`` inside its loop.
    """
    used = [v for v in loops if re.search(rf"\$\{{?{v}\b", line) or (v == positional and re.search(r"\$\d", line))]
    lines = [line]
    for var in used:
        expanded = []
        for text in lines:
            for value in loops[var]:
                text_v = re.sub(rf"\$\{{?{var}\}}?", value, text)
                if var == positional:
                    words = value.split()
                    text_v = re.sub(r"\$(\d)", lambda m, w=words: w[int(m.group(1)) - 1], text_v)
                expanded.append(text_v)
        lines = expanded
    return [re.sub(r"\$\{?(\w+)\}?", lambda m: f"VAR_{m.group(1).upper()}", text) for text in lines]


def _package_command(line: str) -> tuple[str, list[str]] | None:
    """``(entry, argv)`` of a README line that runs one of our CLIs, else None."""
    words = shlex.split(line)
    while words and re.match(r"^\w+=", words[0]):  # environment assignments before the command
        words = words[1:]
    if words[:2] != ["uv", "run"]:
        return None
    words = words[2:]
    if words and words[0] in ("accelerate", "torchrun", "python") and "-m" in words:
        words = words[words.index("-m") + 1:]
    if not words or words[0] not in ENTRIES:
        return None
    return ENTRIES[words[0]], words[1:]


def _cases() -> list[tuple[str, str, tuple[str, ...]]]:
    """``(where, line, outputs of the block's earlier lines)`` for every line that runs one of our CLIs."""
    cases = []
    for readme in READMES:
        for b, block in enumerate(_blocks(readme)):
            text = "\n".join(block)
            loops = {m.group(1): shlex.split(m.group(2)) for m in re.finditer(r"for (\w+) in (.*?); do", text)}
            positional = next((m.group(1) for m in re.finditer(r"set -- \$(\w+)", text)), None)
            lines = [expanded for line in block for expanded in _expand(line, loops, positional)]
            outputs: list[str] = []
            for i, line in enumerate(lines):
                if _package_command(line):
                    cases.append((f"{readme.relative_to(ROOT)}:{b}:{i}", line, tuple(outputs)))
                    words = shlex.split(line)
                    outputs += [words[k + 1] for k, word in enumerate(words[:-1]) if word == "--output-dir"]
    return cases


CASES = _cases()


def _load(entry: str) -> click.Command:
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


def _parse(command: click.Command, argv: list[str], name: str, parent: click.Context | None = None) -> click.Context:
    """Parse ``argv`` down to the leaf command without running it (types and required options checked)."""
    ctx = command.make_context(name, list(argv), parent=parent)
    if isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        sub_name, sub, sub_args = command.resolve_command(ctx, rest)
        return _parse(sub, sub_args, sub_name, ctx)
    return ctx


def test_the_readmes_hold_commands():
    assert len(CASES) >= 10, "the READMEs should show how to run the packages"


@pytest.mark.parametrize("where, line, earlier_outputs", CASES, ids=[c[0] for c in CASES])
def test_readme_command_line_parses_and_dry_runs(where, line, earlier_outputs, tmp_path, monkeypatch):
    entry, argv = _package_command(line)
    monkeypatch.chdir(tmp_path)
    shared = shared_data_root()
    argv = [arg.replace("../shared/data", str(shared) if shared else "SHARED_DATA") for arg in argv]
    argv = [arg if "*" not in arg else "GLOB_DIR" for arg in argv]
    # an absolute --output-dir (say /tmp/...) may hold a run from an earlier session: dry-run into tmp instead
    argv = [str(tmp_path / "out" / Path(arg).name) if i and argv[i - 1] == "--output-dir" and Path(arg).is_absolute()
            else arg for i, arg in enumerate(argv)]
    placeholders = sorted({word for arg in argv for word in PLACEHOLDER.findall(arg)})
    for word in placeholders:  # stand-ins that exist: folders for *DIR/DATA/ROOT, files otherwise
        path = tmp_path / "placeholders" / word
        path.parent.mkdir(exist_ok=True)
        path.mkdir() if word.endswith(("DIR", "DATA", "ROOT")) else path.touch()
        argv = [re.sub(rf"\b{word}\b", str(path), arg) for arg in argv]
    main = _load(entry)
    ctx = _parse(main, argv, entry.split(".")[0])
    has_dry_run = any(p.name == "dry_run" for p in ctx.command.params)
    # a line that reads what an earlier line of its block writes can only be parsed here, not dry-run
    reads_earlier_output = any(out in arg for out in earlier_outputs for arg in argv)
    if has_dry_run and not placeholders and not reads_earlier_output and "--dry-run" not in argv:
        result = CliRunner().invoke(main, [*argv, "--dry-run"], catch_exceptions=False)
        assert result.exit_code == 0, f"{line}\n{result.output}"
        assert not any(tmp_path.iterdir()), "a dry run wrote files"
