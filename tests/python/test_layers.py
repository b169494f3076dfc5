"""The package's modules import each other without a circle, counting imports
made inside functions (a deferred import is still a dependency); imports under
``if TYPE_CHECKING:`` are for the type checker only and do not count."""

import ast
import os

PKG = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "python", "peeklock"))


def _module_name(path):
    rel = os.path.relpath(path, os.path.dirname(PKG))[: -len(".py")].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def _walk_body(body):
    for stmt in body:
        yield from ast.walk(stmt)


def _edges(path, name, is_pkg):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded.update(id(n) for n in _walk_body(node.body))
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    for node in ast.walk(tree):
        if id(node) in guarded or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            parent = base[: len(base) - node.level + 1]
            target = ".".join(parent + ([node.module] if node.module else []))
            if node.module is None:  # from . import x
                for alias in node.names:
                    yield f"{target}.{alias.name}"
            else:
                yield target
        else:
            for alias in getattr(node, "names", []):
                if alias.name.startswith("peeklock"):
                    yield alias.name


def test_no_import_cycles():
    modules = {}
    for root, _dirs, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                modules[_module_name(path)] = (path, f == "__init__.py")
    graph = {
        name: {t for t in _edges(path, name, is_pkg) if t in modules and t != name and not name.startswith(t + ".")}
        for name, (path, is_pkg) in modules.items()
    }
    cycles = []
    state = {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
