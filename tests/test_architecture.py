"""The shape of the code, enforced: dependencies point inward, no god modules, no private
names across modules, and documented public functions (docs/architecture.md explains it).

These read the source with ``ast``; nothing is imported or run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "siamkit"
BENCH = ROOT / "bench"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 120
#: the edges: nothing below them may import them
EDGES = ("siamkit.cli", "siamkit.service")


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) of every import in ``path``, lazy ones included."""
    for node in ast.walk(_tree(path)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield from _imports_of(path, node)


def test_no_module_over_the_line_limit() -> None:
    big = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_no_function_over_the_line_limit() -> None:
    long = []
    for p in _modules():
        for node in ast.walk(_tree(p)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_library_never_imports_its_edges() -> None:
    bad = []
    for p in _modules():
        mod = _name(p)
        for target, _, line in _imports(p):
            for edge in EDGES:
                inside = mod == edge or mod.startswith(edge + ".")
                if not inside and (target == edge or target.startswith(edge + ".")):
                    # the CLI may start the service; nothing else may import either edge
                    if not (edge == "siamkit.service" and (mod == "siamkit.cli" or mod.startswith("siamkit.cli."))):
                        bad.append(f"{mod}:{line} imports {target}")
    assert not bad, bad


def test_no_import_cycles_between_modules() -> None:
    """Module-level imports only (a lazy import inside a function cannot form a cycle at
    import time, but a cycle between packages still shows through their modules)."""
    names = {_name(p): p for p in _modules()}
    graph: dict[str, set[str]] = {m: set() for m in names}
    for mod, p in names.items():
        for node in _tree(p).body:
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target, imported, _ in _imports_of(p, node):
                for cand in [f"{target}.{n}" for n in imported] + [target]:
                    if cand in names and cand != mod:
                        graph[mod].add(cand)
                        break
    # a package's __init__ importing its own submodules is not a cycle
    cycles = []
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for n in graph[m]:
            if n.startswith(m + ".") or m.startswith(n + ".") and names[n].name == "__init__.py":
                continue
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n) :] + [n])
            elif not state.get(n):
                visit(n, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m, [])
    assert not cycles, cycles


def _imports_of(path: Path, node: ast.stmt) -> Iterator[tuple[str, list[str], int]]:
    mod = _name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    if isinstance(node, ast.Import):
        for a in node.names:
            yield a.name, [], node.lineno
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")
            base = base[: len(base) - node.level + 1]
            yield ".".join(base + ([node.module] if node.module else [])), [a.name for a in node.names], node.lineno
        else:
            yield node.module or "", [a.name for a in node.names], node.lineno


# third-party private names used on purpose, each with the reason
ALLOWED_PRIVATE = {
    ("torch.distributed", "_functional_collectives"): "PyTorch's supported autograd-aware all_gather "
    "(torch.distributed.nn.functional.all_gather is deprecated in 2.13 and points here)",
}


@pytest.mark.parametrize("where", ["src", "bench"])
def test_no_private_name_imported_from_another_module(where: str) -> None:
    files = _modules() if where == "src" else sorted(BENCH.glob("*.py"))
    bad = []
    for p in files:
        for node in ast.walk(_tree(p)):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__") and (node.module, a.name) not in ALLOWED_PRIVATE:
                        bad.append(f"{p.relative_to(ROOT)}:{node.lineno} imports {a.name} from {node.module}")
    assert not bad, bad


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    if a.vararg:
        names.append(a.vararg.arg)
    if a.kwarg:
        names.append(a.kwarg.arg)
    return [n for n in names if n not in ("self", "cls")]


#: command and endpoint functions: their docstrings are the --help text / the OpenAPI
#: description, and their parameters are documented by typer.Option / FastAPI
_EDGE_DOCS = ("cli", "anomaly_cli.py", "routers")


def _public_functions() -> Iterator[tuple[Path, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for p in _modules():
        if p.name.startswith("_") and p.name != "__init__.py":
            continue
        if any(part in _EDGE_DOCS for part in p.relative_to(SRC).parts):
            continue
        tree = _tree(p)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                yield p, node
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and not sub.name.startswith("_"):
                        yield p, sub


def test_public_functions_with_two_parameters_document_them() -> None:
    missing = []
    for p, fn in _public_functions():
        if len(_params(fn)) < 2:
            continue
        doc = ast.get_docstring(fn) or ""
        returns_none = isinstance(fn.returns, ast.Constant) and fn.returns.value is None
        need = ["Args:"] + ([] if returns_none else ["Returns:"])
        absent = [n for n in need if n not in doc and not (n == "Returns:" and "Yields:" in doc)]
        if absent:
            missing.append(f"{p.relative_to(ROOT)}:{fn.lineno} {fn.name} lacks {' '.join(absent)}")
    assert not missing, f"{len(missing)} public functions lack Args/Returns:\n" + "\n".join(missing)
