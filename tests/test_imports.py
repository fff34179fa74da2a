"""The package's import graph: no module reaches into another's private names, every module sits in a layer (core →
inference → api → train / eval / cli / integrations → bench) and imports downwards only, finer rules within a layer,
and no import cycle; checked on every import statement of ``cfip_jax`` (in functions too)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "cfip_jax"

# module prefix -> packages it must not import (the layers above it, and its siblings where they are independent)
FORBIDDEN = {
    "cfip_jax.scm": ("cfip_jax.nn", "cfip_jax.model", "cfip_jax.train", "cfip_jax.eval", "cfip_jax.api",
                     "cfip_jax.model_io", "cfip_jax.data", "cfip_jax.bench", "cfip_jax.fixed_point"),
    "cfip_jax.nn": ("cfip_jax.model", "cfip_jax.train", "cfip_jax.eval", "cfip_jax.api", "cfip_jax.model_io",
                    "cfip_jax.data", "cfip_jax.bench", "cfip_jax.fixed_point"),
    "cfip_jax.fixed_point": ("cfip_jax.nn", "cfip_jax.model", "cfip_jax.train", "cfip_jax.eval", "cfip_jax.api",
                             "cfip_jax.bench"),
    "cfip_jax.model": ("cfip_jax.train", "cfip_jax.eval", "cfip_jax.api", "cfip_jax.model_io", "cfip_jax.bench"),
    "cfip_jax.inference.correct": ("cfip_jax.scm", "cfip_jax.nn", "cfip_jax.model", "cfip_jax.train",
                                   "cfip_jax.eval", "cfip_jax.api", "cfip_jax.model_io", "cfip_jax.data",
                                   "cfip_jax.bench", "cfip_jax.inference.refine", "cfip_jax.fixed_point"),
    "cfip_jax.inference": ("cfip_jax.train", "cfip_jax.eval", "cfip_jax.api", "cfip_jax.bench", "cfip_jax.cli",
                           "cfip_jax.integrations", "cfip_jax.bootstrap"),
    "cfip_jax.train": ("cfip_jax.eval", "cfip_jax.api", "cfip_jax.inference", "cfip_jax.bench"),
    "cfip_jax.eval": ("cfip_jax.train", "cfip_jax.api", "cfip_jax.bench"),
    "cfip_jax.api": ("cfip_jax.train", "cfip_jax.eval", "cfip_jax.bench"),
    "cfip_jax.model_io": ("cfip_jax.train", "cfip_jax.eval", "cfip_jax.api", "cfip_jax.bench"),  # no Orbax
    "cfip_jax.data": ("cfip_jax.nn", "cfip_jax.model", "cfip_jax.train", "cfip_jax.eval", "cfip_jax.api",
                      "cfip_jax.bench"),
    "cfip_jax.inference.structure": ("cfip_jax.scm", "cfip_jax.nn", "cfip_jax.model", "cfip_jax.train", "cfip_jax.eval",
                           "cfip_jax.api", "cfip_jax.bench", "cfip_jax.fixed_point", "cfip_jax.data"),
    "cfip_jax.inference.io": ("cfip_jax.nn", "cfip_jax.model", "cfip_jax.train", "cfip_jax.eval", "cfip_jax.api",
                        "cfip_jax.bench"),
    "cfip_jax.cli": ("cfip_jax.train", "cfip_jax.eval", "cfip_jax.bench"),
    "cfip_jax.integrations": ("cfip_jax.train", "cfip_jax.eval", "cfip_jax.bench", "cfip_jax.cli"),
}  # fmt: skip


# the layers, bottom up: a module imports only from its own layer and the ones below it
LAYERS = (
    ("core", ("cfip_jax.validation", "cfip_jax.arrays_io", "cfip_jax.scm", "cfip_jax.nn", "cfip_jax.fixed_point",
              "cfip_jax.model", "cfip_jax.model_io", "cfip_jax.data", "cfip_jax.compilation_cache",
              "cfip_jax.assets", "cfip_jax.dataclass_flags")),
    ("inference", ("cfip_jax.inference",)),
    ("api", ("cfip_jax.api", "cfip_jax.bootstrap")),
    ("applications", ("cfip_jax.train", "cfip_jax.eval", "cfip_jax.cli", "cfip_jax.integrations",
                      "cfip_jax.__main__")),
    ("benchmarks", ("cfip_jax.bench",)),
)  # fmt: skip


def _layer(module: str) -> int | None:
    for k, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return k
    return None


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path):
    """``(line, module, imported names, alias)`` of each import of a file (``alias``: the local name of an imported
    module, or ``{local name: imported name}`` for a ``from`` import)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, (), alias.asname or alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            yield node.lineno, base, tuple(a.name for a in node.names), {a.asname or a.name: a.name for a in node.names}


def _private_attribute_uses(path: pathlib.Path, module_aliases: set[str]):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in module_aliases:
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                yield node.lineno, f"{node.value.id}.{node.attr}"


def test_no_module_imports_another_modules_private_names():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        aliases = set()
        for line, module, names, alias in _imports(path):
            if not module.startswith("cfip_jax"):
                continue
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}.{name}")
            if isinstance(alias, str):
                aliases.add(alias)
            elif alias:  # `from cfip_jax.x import y [as z]` where y is a module: z is a module alias too
                folder = PACKAGE.parent / module.replace(".", "/")
                aliases.update(a for a, n in alias.items() if (folder / f"{n}.py").exists() or (folder / n).is_dir())
        for line, use in _private_attribute_uses(path, aliases):
            problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} uses {use}")
    assert not problems, "\n".join(problems)


def test_dependencies_point_down():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        rules = [banned for prefix, banned in FORBIDDEN.items() if name == prefix or name.startswith(prefix + ".")]
        for line, module, names, _ in _imports(path):
            targets = [module] + [f"{module}.{n}" for n in names]
            for banned in (b for rule in rules for b in rule):
                if any(t == banned or t.startswith(banned + ".") for t in targets):
                    problems.append(
                        f"{name}:{line} imports {module} ({', '.join(names) or 'module'}): {banned} is above it"
                    )
    assert not problems, "\n".join(problems)


def _graph() -> dict[str, set[str]]:
    """Module → the ``cfip_jax`` modules it imports (every import statement, in functions too; ``from a import b``
    counts ``a.b`` when it is a module). The package root (``cfip_jax/__init__.py``, the lazy façade) is left out."""
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        deps = set()
        for _, module, names, _ in _imports(path):
            for target in [f"{module}.{n}" for n in names if f"{module}.{n}" in modules] or [module]:
                if target in modules and target != "cfip_jax":
                    deps.add(target)
        graph[_module_name(path)] = deps
    graph.pop("cfip_jax", None)
    return graph


def test_no_import_cycles():
    graph = _graph()
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue  # a package's __init__ reached through a submodule import
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(cycles)


def test_every_module_sits_in_a_layer_and_imports_only_downwards():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        if name == "cfip_jax":
            continue  # the lazy façade
        own = _layer(name)
        if own is None:
            problems.append(f"{name} is in no layer of LAYERS")
            continue
        for line, module, names, _ in _imports(path):
            for imported in [module] + [f"{module}.{n}" for n in names]:
                target = _layer(imported)
                if target is not None and target > own:
                    problems.append(f"{name}:{line} ({LAYERS[own][0]}) imports {imported} ({LAYERS[target][0]})")
    assert not problems, "\n".join(problems)


def test_every_function_and_class_of_the_package_stays_short():
    """House rule: a function (docstring included) fits in 60 lines, a class in 200."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            limit = 60 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else 200
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                size = node.end_lineno - node.lineno + 1
                if size > limit:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({size} lines)")
    assert not long, "over the length limit: " + "; ".join(long)
