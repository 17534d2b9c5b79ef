"""The package's import graph, read from the source: no cycle between trainscale modules (imports inside
functions included; imports under ``if TYPE_CHECKING:`` never run and are left out), and analysis and
workloads import nothing of trainscale but the results contract (trainscale.scaling.results), which
itself imports nothing else of ours."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"scaling": "trainscale.scaling", "launchers": "trainscale.launchers", "workloads": "trainscale.workloads",
            "faults": "trainscale.faults", "analysis": "trainscale.analysis"}
CONTRACT = "trainscale.scaling.results"


def module_files() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The trainscale modules that `name` imports anywhere in its file, with the packages whose
    __init__ each import runs."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def add(target: str) -> None:
        parts = target.split(".")
        for i in range(2, len(parts) + 1):  # importing a.b.c runs a.b's __init__ first
            if ".".join(parts[:i]) in modules:
                found.add(".".join(parts[:i]))

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            add(base)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    add(f"{base}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def test_the_cycle_finder_finds_a_cycle_and_passes_a_tree():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_imports_inside_functions_count_and_type_checking_imports_do_not(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import trainscale.x.y\n"
                   "def f():\n    from trainscale.x import z\n")
    modules = {"trainscale.x", "trainscale.x.y", "trainscale.x.z", "trainscale.x.m"}
    assert imports_of("trainscale.x.m", src, modules) == {"trainscale.x", "trainscale.x.z"}


def test_no_import_cycle_between_trainscale_modules():
    graph = import_graph()
    assert len(graph) > 90  # every module was read
    assert cycles(graph) == []


def test_analysis_and_workloads_import_only_the_results_contract():
    outside = []
    for name, deps in import_graph().items():
        own = ".".join(name.split(".")[:2])
        if own in ("trainscale.analysis", "trainscale.workloads"):
            allowed = (own, CONTRACT)
        elif name == CONTRACT or name.startswith(CONTRACT + "."):
            allowed = (CONTRACT,)
        else:
            continue
        outside += [f"{name} -> {d}" for d in sorted(deps) if not any(d == a or d.startswith(a + ".") for a in allowed)
                    and d not in ("trainscale.scaling",)]
    assert outside == []


# Documents named in capitals (README.md, ...) are this repository's; one it lacks is somebody's notes that
# users do not have. A path that climbs out of its folder into another must be a file of this repository, seen
# from the citing file's folder.
DOC_NAME = re.compile(r"(?<![\w./-])([A-Z][A-Z_]*\.md)\b")
UP_PATH = re.compile(r"(?<![\w.])((?:\.\./)+[\w.-]+/[\w./-]+)")

CITED = re.compile(r"(?<![\w./-])((?:scaling|launchers|workloads|faults|analysis|tests|benchmarks|tools|slurm|docs)"
                   r"/[\w./-]*\.(?:py|md|sh|toml))\b")


def test_every_file_the_code_and_docs_cite_exists():
    """Paths named in code, comments, docs, the README and the Makefile are files of this repository
    (and nothing cites the maintainers' own notes, which users do not have)."""
    sources = [p for d in PACKAGES | {"tests": "", "benchmarks": "", "tools": "", "slurm": "", "docs": ""}
               for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".md", ".sh")]
    sources += [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    docs = {p.name for p in sources if p.suffix == ".md"}
    missing, outside = [], []
    for src in sources:
        text = src.read_text()
        missing += [f"{src.relative_to(ROOT)} cites {m}" for m in CITED.findall(text)
                    if "NAME" not in m and not (ROOT / m).exists()]
        outside += [f"{src.relative_to(ROOT)} names {m}" for m in DOC_NAME.findall(text)
                    if m not in docs]
        outside += [f"{src.relative_to(ROOT)} cites {m}" for m in UP_PATH.findall(text)
                    if not ((src.parent / m).exists() and ROOT.resolve() in (src.parent / m).resolve().parents)]
    assert missing == [] and outside == []
