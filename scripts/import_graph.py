"""Which package of haimaker imports which: one line per package, its imports at run time and for typing only.

    python scripts/import_graph.py                 # the working tree's src/haimaker
    python scripts/import_graph.py --rev 06bb20f   # src/haimaker as a commit had it (read with git)

A package is a folder under src/haimaker (api, services, ...); a top-level module (app, pipeline, ...) is its own.
Imports under `if TYPE_CHECKING:` are listed apart, in brackets: they shape the types, not the load order.
Cycles between two packages are printed last: through run-time imports, then counting typing-only ones too.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "haimaker"


def _sources(rev: str | None) -> Iterator[tuple[str, str]]:
    """(path relative to src/haimaker, text) of every module."""
    if rev is None:
        base = ROOT / "src" / PACKAGE
        for path in sorted(base.rglob("*.py")):
            yield path.relative_to(base).as_posix(), path.read_text()
        return
    for name in _git("ls-tree", "-r", "--name-only", rev, f"src/{PACKAGE}").split():
        if name.endswith(".py"):
            yield name.removeprefix(f"src/{PACKAGE}/"), _git("show", f"{rev}:{name}")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def _package_of(relative: str) -> str:
    head, _, rest = relative.partition("/")
    return head if rest else head.removesuffix(".py")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterator[tuple[str, bool]]:
    """(imported haimaker module, only for typing) for every import in the module, at any depth."""
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for inner in node.body:
                typing_only.update(id(n) for n in ast.walk(inner))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != PACKAGE else [f"{PACKAGE}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith(PACKAGE + "."):
                yield name.removeprefix(PACKAGE + "."), id(node) in typing_only


def graph(rev: str | None) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    runtime: dict[str, set[str]] = defaultdict(set)
    typing: dict[str, set[str]] = defaultdict(set)
    for relative, text in _sources(rev):
        source = _package_of(relative)
        runtime.setdefault(source, set())
        for module, only_typing in _imports(ast.parse(text)):
            target = module.split(".")[0]
            if target != source:
                (typing if only_typing else runtime)[source].add(target)
    for source, targets in typing.items():
        targets -= runtime[source]
    return runtime, typing


def _cycles(edges: dict[str, set[str]]) -> str:
    pairs = sorted((a, b) for a, targets in edges.items() for b in targets if a < b and a in edges.get(b, set()))
    return ", ".join(f"{a} <-> {b}" for a, b in pairs) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="a git revision (default: the working tree)")
    args = parser.parse_args()
    runtime, typing = graph(args.rev)
    width = max(map(len, runtime))
    for source in sorted(runtime):
        line = ", ".join(sorted(runtime[source])) or "-"
        if typing.get(source):
            line += "  [" + ", ".join(sorted(typing[source])) + "]"
        sys.stdout.write(f"{source:<{width}}  -> {line}\n")
    both = {source: runtime[source] | typing.get(source, set()) for source in runtime}
    sys.stdout.write(f"cycles (run time): {_cycles(runtime)}\ncycles (with typing-only imports): {_cycles(both)}\n")


if __name__ == "__main__":
    main()
