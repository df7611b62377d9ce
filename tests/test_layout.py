"""The workspace contract of DESIGN.md §1–2, checked for every package that exists."""

import ast
import itertools
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())
ALL = [ROOT / "shared", *PACKAGES]
# import name → distribution name, where they differ
DIST_OF = {"sklearn": "scikit-learn", "torch_geometric": "torch-geometric", "PIL": "pillow", "yaml": "pyyaml"}
STDLIB = set(sys.stdlib_module_names)


def _project(path: Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())["project"]


def _import_name(path: Path) -> str:
    return "diffcore" if path.name == "shared" else _project(path)["name"].replace("-", "_")


def test_root_is_a_virtual_workspace():
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "project" not in root
    assert root["tool"]["uv"]["workspace"]["members"] == ["shared", "packages/*"]
    assert (ROOT / "uv.lock").exists() and (ROOT / "README.md").exists() and (ROOT / ".ci" / "run").exists()
    assert PACKAGES, "no paper package yet"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_package_shape(path):
    name = _import_name(path)
    src = path / "src" / name
    assert (path / "README.md").exists() and (src / "__init__.py").exists()
    assert list((path / "tests").glob(f"test_{'diffcore' if name == 'diffcore' else name}_*.py")), \
        "test files are prefixed by the package's import name"
    if path.name != "shared":
        for module in ("__main__.py", "cli.py", "config.py", "models.py"):
            assert (src / module).exists(), f"{name} lacks {module}"
        assert _project(path)["scripts"][_project(path)["name"]] == f"{name}.cli:main"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_third_party_import_is_declared(path):
    name = _import_name(path)
    project = _project(path)
    requirements = [*project["dependencies"], *itertools.chain.from_iterable(
        project.get("optional-dependencies", {}).values())]
    declared = {re.split(r"[;\[<>=~! ]", d, maxsplit=1)[0].strip() for d in requirements}
    used = set()
    for file in (path / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                used |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                used.add(node.module.split(".")[0])
    third_party = {DIST_OF.get(m, m.replace("_", "-")) for m in used - STDLIB - {name}}
    assert third_party <= declared, f"{name} imports undeclared {sorted(third_party - declared)}"


@pytest.mark.parametrize("path", PACKAGES, ids=lambda p: p.name)
def test_papers_do_not_import_each_other_and_help_is_light(path):
    name = _import_name(path)
    others = {_import_name(p) for p in PACKAGES} - {name}
    for file in (path / "src").rglob("*.py"):
        text = file.read_text()
        assert not any(f"import {o}" in text or f"from {o}" in text for o in others), file
    # --help must not pay for torch: the CLI module and the package import without it.
    code = f"import sys, {name}.cli; bad = [m for m in ('torch', 'numpy') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"importing {name}.cli pulls in {out.stdout.strip()}"
    helped = subprocess.run([sys.executable, "-m", name, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "Usage:" in helped.stdout


def test_core_never_imports_a_paper():
    papers = {_import_name(p) for p in PACKAGES}
    for file in (ROOT / "shared" / "src").rglob("*.py"):
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in papers, file
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & papers, file


def _src_modules() -> dict[str, Path]:
    """Every module of the core and the paper packages: dotted name → file (a package is its ``__init__.py``)."""
    modules = {}
    for path in ALL:
        src = path / "src"
        for file in src.rglob("*.py"):
            parts = file.relative_to(src).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return modules


def _project_imports(name: str, file: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``file`` names in an import anywhere (module level or inside a function).

    ``from a.b import c`` imports the module ``a.b.c`` when there is one, else ``a.b``; relative imports are
    resolved. The parent packages an import runs first are left out: a package's ``__init__`` may import its
    own modules without a cycle.
    """
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules}
    return found - {name}


def test_no_module_imports_a_module_that_imports_it_back():
    """The import graph of every src package is acyclic, function-level imports included (a cycle hidden
    inside a function still couples the two modules, and breaks as soon as one import moves to the top)."""
    modules = _src_modules()
    graph = {name: _project_imports(name, file, modules) for name, file in modules.items()}
    assert "diff_resnet.cli" in graph["diff_resnet.__main__"]  # the walk sees the imports it must see
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" → ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles: " + "; ".join(cycles)


@pytest.mark.parametrize("readme", [ROOT / "README.md", ROOT / "shared" / "README.md",
                                    *sorted(ROOT.glob("packages/*/README.md"))], ids=lambda p: str(p.relative_to(ROOT)))
def test_readmes_have_no_unfilled_placeholders(readme):
    """A draft's stand-ins (a line ``MNIST_RESULTS``, a ``TOY_SECONDS`` in a sentence) must not reach users."""
    text = re.sub(r"```.*?```|`[^`\n]*`", "", readme.read_text(), flags=re.S)  # code may hold NAMES_LIKE_THIS
    names = set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9]\b", text))
    legit = {n for n in names if n.endswith(("_DIR", "_FILE", "_ROOT")) or n.startswith(("DIFFNETS_", "CUDA_", "OMP_"))}
    alone = set(re.findall(r"^[A-Z][A-Z0-9_]{3,}$", text, flags=re.M))  # a line that is one capitalised word
    left = sorted(names - legit | alone)
    assert not left, f"{readme.name}: unfilled placeholders {left}"
