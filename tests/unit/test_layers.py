"""The package's imports point one way: a module imports its own package and the packages listed before it in
goldenimage.LAYERS, never one listed after it. No exception list. Every import is read from the source with
ast, so imports inside functions (the CLI's lazy ones) count like the others."""

import ast
from pathlib import Path

import pytest

from goldenimage import LAYERS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "goldenimage"

#: Every package (or top-level module) of goldenimage, lowest first.
ORDER = [name for _layer, names in LAYERS for name in names]
LAYER_OF = {name: layer for layer, names in LAYERS for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(module: str, is_package: bool, source: str) -> list[tuple[int, str]]:
    """(line, absolute name) of every goldenimage import in a module's source, at any depth."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # "from pkg import sub" reaches pkg.sub when sub is a submodule: check the name as well
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "goldenimage"]


def unit(name: str) -> str | None:
    """The LAYERS entry of goldenimage.X...; None for the root module and the constants it holds."""
    parts = name.split(".")
    if len(parts) < 2 or not ((PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file()):
        return None
    return parts[1]


def violations(module: str, is_package: bool, source: str) -> list[str]:
    here = unit(module)
    problems = []
    for line, name in imports(module, is_package, source):
        there = unit(name)
        if here is None:
            problems.append(f"line {line}: the root module imports {name} (it holds constants only)")
        elif there is None or there == here:
            continue
        elif there not in LAYER_OF:
            problems.append(f"line {line}: {name} is in no layer: add its package to goldenimage.LAYERS")
        elif ORDER.index(there) > ORDER.index(here):
            problems.append(f"line {line}: {here} ({LAYER_OF[here]}) imports {name} ({LAYER_OF[there]}), "
                            f"which goldenimage.LAYERS lists after it")
    return problems


def test_every_package_is_in_exactly_one_layer() -> None:
    on_disk = sorted(p.stem for p in PACKAGE.iterdir()
                     if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file())
    assert sorted(ORDER) == on_disk


def test_an_upward_import_inside_a_function_is_caught() -> None:
    source = "from .errors import GoldenError\n\n\ndef f():\n    from ..commands import bake\n    return bake\n"
    assert violations("goldenimage.core.run", False, source) == [
        "line 5: core (core) imports goldenimage.commands.bake (commands), which goldenimage.LAYERS lists after it"]


def test_a_sideways_import_against_the_order_is_caught() -> None:
    source = "from goldenimage.bake import store\n"
    assert violations("goldenimage.render.userdata", False, source) == [
        "line 1: render (producers) imports goldenimage.bake.store (producers), which goldenimage.LAYERS lists "
        "after it"]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_only_downwards(path: Path) -> None:
    assert violations(module_name(path), path.name == "__init__.py", path.read_text()) == []


# The first-boot agent stands apart from the layers above; inside it, the modules import one another without a
# circle (a module that needs another's parts imports them from a module below both, as converge_host is).
AGENT = ROOT / "firstboot" / "golden_firstboot"


def agent_imports(path: Path, source: str) -> set[str]:
    """The agent's own modules (dotted, under golden_firstboot) that one of its files imports, at any depth."""
    module = "golden_firstboot." + ".".join(path.relative_to(AGENT).with_suffix("").parts)
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.removesuffix(".__init__").split(".")
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(target + "." + alias.name)
                found.add(target)
    return found


def agent_graph(sources: dict[Path, str]) -> dict[str, set[str]]:
    """module -> the agent modules it imports (a package's __init__ stands for the package)."""
    names = {}
    for path in sources:
        parts = path.relative_to(AGENT).with_suffix("").parts
        names[path] = ".".join(("golden_firstboot",) + (parts[:-1] if parts[-1] == "__init__" else parts))
    known = set(names.values())
    return {names[p]: {t for t in agent_imports(p, s) if t in known and t != names[p]} for p, s in sources.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two modules or more (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_a_circle_in_the_agent_is_caught() -> None:
    sources = {AGENT / "a.py": "from .b import x\n", AGENT / "b.py": "def f():\n    from .a import y\n",
               AGENT / "c.py": "from .a import z\n"}
    assert circles(agent_graph(sources)) == [["golden_firstboot.a", "golden_firstboot.b"]]


def test_the_agent_has_no_import_circle() -> None:
    sources = {p: p.read_text() for p in sorted(AGENT.rglob("*.py"))}
    graph = agent_graph(sources)
    assert "golden_firstboot.converge_host" in graph["golden_firstboot.converge_files"]
    assert circles(graph) == []
