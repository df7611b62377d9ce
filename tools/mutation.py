"""Mutation testing of the modules that hold the papers' maths, with mutmut, one package at a time.

    uv run python tools/mutation.py difformer                  # every listed module of the package
    uv run python tools/mutation.py difformer --module kernels  # one module
    uv run python tools/mutation.py difformer --show survived   # the diffs of the surviving mutants

mutmut rewrites every function of a module into a set of mutants (an operator flipped, a constant changed, an
argument dropped, ...) and runs the package's fast tests (``-m "not slow"``) against each one, through the tests
that cover the mutated function. A mutant is *killed* when a test fails (a timeout counts as killed: the tests
noticed), *survives* when every test passes. The score of a module is killed / (mutants − equivalent), where
*equivalent* mutants are the ones judged to compute the same thing as the original (``tools/mutation_equivalent.toml``,
one line of reason each; a listed name that no longer survives is reported as stale).

The package's ``src/`` and ``tests/`` are copied into ``.mutation/<package>/`` (git-ignored) and mutmut runs there,
so the working tree is never touched. mutmut keeps its results there: a second run re-checks only what changed
(``--fresh`` starts over). Statements that raise an error or emit a warning are not mutated (their text is
the bad-input tests' business; the ``if`` that leads to them is mutated). The table is printed and written to
``<package>/results/mutation.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT_FILE = ROOT / "tools" / "mutation_equivalent.toml"

#: package → (folder, import name, modules holding the paper's maths, relative to src/<import>/).
PACKAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "diffcore": ("shared", "diffcore", ("ddpm.py",)),
    "diff-resnet": ("packages/diff-resnet", "diff_resnet", ("diffusion.py",)),
    "difformer": ("packages/difformer", "difformer", ("kernels.py", "models.py")),
    "dianet": ("packages/dianet", "dianet", ("layers.py",)),
    "pdiff": ("packages/pdiff", "pdiff", ("models.py", "generator.py", "evaluate.py")),
    "diffclassify": ("packages/diffclassify", "diffclassify", ("features.py", "heads.py", "diffusion.py")),
}

#: Imported once by mutmut's fork server, so each mutant's test run starts with them in memory.
PRELOAD = ("torch", "numpy", "scipy.sparse", "accelerate", "safetensors.torch", "click", "pytest",
           "diffusers", "torch_geometric", "timm", "sklearn.linear_model")

#: mutmut's exit codes → what they mean here (mutmut.stats.status_by_exit_code, timeouts counted as caught).
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not checked",
          36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout"}


def mutmut_config(import_name: str, modules: list[str], workers_preload: Path) -> str:
    """The pyproject.toml of the work folder: mutmut's settings and the workspace's pytest settings."""
    only = ", ".join(f'"src/{import_name}/{m}"' for m in modules)
    return f"""[tool.mutmut]
source_paths = ["src/{import_name}/"]
only_mutate = [{only}]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not slow", "--import-mode=importlib", "-q"]
pytest_add_cli_args_test_selection = ["tests/"]
also_copy = ["conftest.py"]
process_isolation = "forkserver"
forkserver_warmup = "import"
preload_modules_file = "{workers_preload}"
timeout_constant = 30.0
use_git_change_detection = false
# Error and warning texts are the bad-input tests' business (tests/test_bad_input.py pins them); their conditions
# are still mutated.
do_not_mutate_patterns = ['^\\s*raise \\w+\\(', 'warnings\\.warn\\(']

[tool.pytest.ini_options]
markers = ["slow: long runs (deselected here)"]
filterwarnings = ["ignore::DeprecationWarning"]
"""


def sources_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def prepare(package: str, modules: list[str], fresh: bool) -> Path:
    """Copy the package's src/ and tests/ (and the root conftest) into its work folder; start over when the
    sources changed (mutmut would keep mutants of the old code) or ``fresh``."""
    folder, import_name, _ = PACKAGES[package]
    work = ROOT / ".mutation" / package
    src = ROOT / folder / "src"
    stamp = work / "sources.sha256"
    if fresh or not stamp.exists() or stamp.read_text() != sources_digest(src):
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    for name in ("src", "tests"):
        shutil.copytree(ROOT / folder / name, work / name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "conftest.py", work / "conftest.py")
    preload = work / "preload.txt"
    preload.write_text("\n".join((*PRELOAD, *(f"{import_name}.{m.removesuffix('.py')}" for m in modules))) + "\n")
    (work / "pyproject.toml").write_text(mutmut_config(import_name, modules, preload))
    stamp.write_text(sources_digest(src))
    return work


def statuses(work: Path, import_name: str, module: str) -> dict[str, str]:
    """mutant name → status, from mutmut's ``.meta`` file of ``module``."""
    meta = work / "mutants" / "src" / import_name / f"{module}.meta"
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: STATUS.get(code, "suspicious") for name, code in codes.items()}


def load_equivalent() -> dict[str, str]:
    if not EQUIVALENT_FILE.exists():
        return {}
    return {name: reason for section in tomllib.loads(EQUIVALENT_FILE.read_text()).values()
            for name, reason in section.items()}


def summarise(package: str, work: Path, modules: list[str]) -> list[dict]:
    _, import_name, _ = PACKAGES[package]
    equivalent = load_equivalent()
    rows = []
    for module in modules:
        status = statuses(work, import_name, module)
        counts = Counter(status.values())
        equiv = sorted(n for n, s in status.items() if s == "survived" and n in equivalent)
        stale = sorted(n for n in equivalent if n.startswith(f"{import_name}.{module.removesuffix('.py')}.")
                       and status.get(n) != "survived")
        caught = counts["killed"] + counts["timeout"]
        judged = len(status) - len(equiv) - counts["not checked"] - counts["skipped"]
        rows.append({
            "module": f"{import_name}/{module}", "mutants": len(status), "killed": counts["killed"],
            "timeout": counts["timeout"], "survived": counts["survived"] - len(equiv), "equivalent": len(equiv),
            "no_tests": counts["no tests"], "not_checked": counts["not checked"], "suspicious": counts["suspicious"],
            "score": round(100 * caught / judged, 1) if judged else None,
            "survivors": sorted(n for n, s in status.items() if s in ("survived", "no tests") and n not in equivalent),
            "stale_equivalent": stale,
        })
    return rows


def print_table(rows: list[dict]) -> None:
    head = f"{'module':34} {'mutants':>7} {'killed':>6} {'timeout':>7} {'survived':>8} {'no tests':>8} " \
           f"{'equiv.':>6} {'score %':>7}"
    print(head)
    print("-" * len(head))
    for r in rows:
        score = "—" if r["score"] is None else f"{r['score']:.1f}"
        print(f"{r['module']:34} {r['mutants']:7} {r['killed']:6} {r['timeout']:7} {r['survived']:8} "
              f"{r['no_tests']:8} {r['equivalent']:6} {score:>7}")
    for r in rows:
        if r["stale_equivalent"]:
            print(f"stale entries in {EQUIVALENT_FILE.name} for {r['module']}: {', '.join(r['stale_equivalent'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", choices=sorted(PACKAGES))
    parser.add_argument("--module", action="append", help="a module of the package's list (repeatable)")
    parser.add_argument("--jobs", type=int, default=max(1, len(os.sched_getaffinity(0)) - 1),
                        help="mutants tested at once [default: the cores available minus one]")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results and start over")
    parser.add_argument("--report-only", action="store_true", help="print the table of the last run")
    parser.add_argument("--show", choices=("survived",), help="print the diff of every surviving mutant")
    args = parser.parse_args()

    folder, import_name, listed = PACKAGES[args.package]
    chosen = [m if m.endswith(".py") else f"{m}.py" for m in (args.module or listed)]
    unknown = sorted(set(chosen) - set(listed))
    if unknown:
        parser.error(f"{', '.join(unknown)} not in {args.package}'s list: {', '.join(listed)}")
    work = ROOT / ".mutation" / args.package
    if not args.report_only:
        work = prepare(args.package, list(listed), args.fresh)
        names = [] if args.module is None else [f"{import_name}.{m.removesuffix('.py')}.*" for m in chosen]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.jobs), *names],
                       cwd=work, env=env, check=False)
    rows = summarise(args.package, work, chosen)
    print()
    print_table(rows)
    if args.show:
        for row in rows:
            for name in row["survivors"]:
                shown = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work,
                                       capture_output=True, text=True, check=False)
                print(f"\n# {name}\n{shown.stdout.strip()}")
    if not args.report_only and args.module is None:
        out = ROOT / folder / "results" / "mutation.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        command = f"uv run python tools/mutation.py {args.package}"
        out.write_text(json.dumps({"command": command, "modules": rows}, indent=1, ensure_ascii=False) + "\n")
        print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
