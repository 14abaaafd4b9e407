"""The package's layout rules, checked on the source: no import cycles between autotune's
modules, no private name imported from another module, and the storage boundary held (only
``autotune.store`` touches Optuna's private API and autotune's tables)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "autotune"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _modules() -> dict[str, ast.Module]:
    """Every autotune module's syntax tree, parsed once per session (read only)."""
    return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in PACKAGE.rglob("*.py")}


def _face_homes(package: str) -> dict[str, str]:
    """The ``_HOMES`` of a lazy package face: each exported name's module."""
    for node in _modules().get(package, ast.Module(body=[], type_ignores=[])).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "_HOMES":
            return ast.literal_eval(node.value)
    return {}


def _imports(name: str, tree: ast.Module, known: set[str]) -> list[tuple[str, list[str], bool]]:
    """(imported module, names, at module level and not under TYPE_CHECKING) for each import
    of an autotune module."""
    out: list[tuple[str, list[str], bool]] = []
    deferred: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (
            isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        ):
            deferred.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        eager = id(node) not in deferred
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("autotune"):
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{node.module}.{n}" in known]
            # `from autotune.study import recording` imports the submodule, not a name.
            out += [(f"{node.module}.{n}", [], eager) for n in submodules]
            # A lazy package face (autotune.lazy) hands out each name from its home module.
            homes = _face_homes(node.module)
            out += [(homes[n], [n], eager) for n in names if n in homes]
            rest = [n for n in names if n not in submodules and n not in homes]
            if rest:
                out.append((node.module, rest, eager))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], eager) for a in node.names if a.name.startswith("autotune")]
    return out


def test_no_import_cycles() -> None:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, tree in modules.items():
        # Edges to the module named, not its parents: a package's __init__ importing its own
        # submodules (so they register) is how registries work, not a cycle.
        graph[name] = {target for target, _, eager in _imports(name, tree, known)
                       if eager and target in known and target != name}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_names_imported_across_modules() -> None:
    modules = _modules()
    known = set(modules)
    offenders = [
        f"{name} imports {target}.{n}"
        for name, tree in modules.items()
        for target, names, _ in _imports(name, tree, known)
        for n in names
        if n.startswith("_") and n != "__version__"
    ]
    assert offenders == []


def test_only_the_store_touches_optuna_internals_and_autotune_tables() -> None:
    private = ("._storage", "._trial_id", "._study_id", "optuna.storages._heartbeat",
               "_max_retry", "autotune.store.db.repository",
               "from autotune.store.db import repository")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if name.startswith("autotune.store"):
            continue
        text = path.read_text()
        offenders += [f"{name}: {p}" for p in private if p in text]
    assert offenders == []


def _import_targets(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module or module.name) for every import of a tree, at any depth: inside functions
    and under TYPE_CHECKING too."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _importers(prefix: str, *, of: str) -> list[str]:
    """Modules outside ``of`` importing ``prefix`` or a module under it."""
    return sorted({f"{name}:{line}" for name, tree in _modules().items() if not _under(name, of)
                   for line, target in _import_targets(tree) if _under(target, prefix)})


def test_only_the_store_imports_autotune_tables() -> None:
    """The store hands out frozen values (``StudyView``, ``TrialView``), never its rows: no
    module outside ``autotune.store`` imports ``autotune.store.db``."""
    assert _importers("autotune.store.db", of="autotune.store") == []


def test_no_module_outside_the_store_imports_sqlalchemy_orm() -> None:
    """ORM models, sessions and mappers are the store's own: others never see a row."""
    assert _importers("sqlalchemy.orm", of="autotune.store") == []


def test_only_the_cluster_imports_ray() -> None:
    """Ray is an optional extra (``autotune[ray]``): only ``autotune.cluster`` imports it, so
    everything else installs and runs without it."""
    assert _importers("ray", of="autotune.cluster") == []
    assert _importers("ray", of="autotune.store") != []  # not vacuous: the cluster does


# Engine implementations: what only a launcher may know (how vLLM is run and guarded, a replay).
ENGINE_IMPLEMENTATIONS = ("autotune.engines.vllm", "autotune.engines.process",
                          "autotune.engines.guard", "autotune.replay")


def _engine_implementation_imports(prefixes: tuple[str, ...]) -> list[str]:
    """Imports of an engine implementation by a module under ``prefixes`` (a module name, or
    its prefix ending in ``*``)."""
    def covered(name: str) -> bool:
        return any(name.startswith(p[:-1]) if p.endswith("*") else _under(name, p)
                   for p in prefixes)

    return [f"{name}:{line} imports {target}" for name, tree in _modules().items()
            if covered(name) for line, target in _import_targets(tree)
            if any(_under(target, i) for i in ENGINE_IMPLEMENTATIONS)]


def test_the_trial_knows_no_engine() -> None:
    """A trial talks to engines through ``autotune.engines``' base and Protocols only: the
    launcher says what is particular to its engine."""
    assert _engine_implementation_imports(("autotune.trial*",)) == []


def test_the_study_and_the_store_know_no_engine() -> None:
    assert _engine_implementation_imports(("autotune.study", "autotune.store")) == []


def test_the_rule_sees_an_engine_import() -> None:
    """The rule is not vacuous: the replay launcher does import vLLM's."""
    assert _engine_implementation_imports(("autotune.replay",)) != []


def _defined_and_imported(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Names a module defines at its top level, and names it imports from autotune modules."""
    defined: set[str] = set()
    imported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(n.id for tg in targets for n in ast.walk(tg) if isinstance(n, ast.Name))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("autotune"):
            imported.update(a.asname or a.name for a in node.names)
    return defined, imported


def test_no_module_re_exports_another_modules_names() -> None:
    """A name is imported from the module that defines it (or from its own package's face,
    whose ``__init__`` exports its submodules' names): never through a module that merely
    imported it, so each name has one home."""
    modules = _modules()
    known = set(modules)
    faces = {name for name in known if (PACKAGE.parent / name.replace(".", "/")).is_dir()}
    homes = {name: _defined_and_imported(tree) for name, tree in modules.items()}
    offenders = []
    for name, tree in modules.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and node.module in known):
                continue
            defined, imported = homes[node.module]
            for alias in node.names:
                if f"{node.module}.{alias.name}" in known or alias.name in defined:
                    continue
                if alias.name in imported and not (node.module in faces
                                                   and _face_exports_its_own(node.module,
                                                                             alias.name)):
                    offenders.append(f"{name} imports {alias.name} through {node.module}")
    assert offenders == []


def _face_exports_its_own(package: str, name: str) -> bool:
    """Whether a package's ``__init__`` takes ``name`` from one of its own submodules."""
    tree = _modules()[package]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and any(
                (a.asname or a.name) == name for a in node.names):
            return _under(node.module, package)
    return False


RUNTIME_PACKAGES = ("autotune.bench", "autotune.engines", "autotune.replay", "autotune.study",
                    "autotune.trial", "autotune.store", "autotune.quality", "autotune.results")


def test_the_space_schema_imports_no_runtime_module() -> None:
    """Reading a space file starts nothing: ``autotune.space`` imports no module that measures,
    launches, stores or studies (at any depth)."""
    offenders = [f"{name}:{line} imports {target}" for name, tree in _modules().items()
                 if _under(name, "autotune.space") for line, target in _import_targets(tree)
                 if any(_under(target, p) for p in RUNTIME_PACKAGES)]
    assert offenders == []


def test_a_module_lists_in_all_only_what_it_defines() -> None:
    """A module's ``__all__`` (a package's face aside) names its own definitions only: a name
    listed there but imported from elsewhere would be a re-export."""
    offenders = []
    for name, tree in _modules().items():
        if (PACKAGE.parent / name.replace(".", "/")).is_dir():
            continue
        defined, _ = _defined_and_imported(tree)
        for node in tree.body:
            if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__":
                offenders += [f"{name}: {n}" for n in ast.literal_eval(node.value)
                              if n not in defined]
    assert offenders == []
