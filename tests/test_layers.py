"""The floors of the house: what each module may import, and that no modules import each other
in a circle. Every import counts: relative ones, lazy ones inside functions, and the ones under
``TYPE_CHECKING``. See "Layers" in docs/architecture.md."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "audiencekit"

# Bottom up. A module may import its own floor and the floors below it, nothing above.
FLOORS = ("vocabulary", "core", "providers", "state", "workflows", "facade", "testing", "cli")
VOCABULARY = {"models", "errors", "backend", "progress", "pages"}
# Modules of core/ that the vocabulary's signatures and the protocol need (docs/architecture.md).
CORE_VOCABULARY = {"core.account", "core.clock", "core.stats"}

# Imports the floors and the no-circle rule let pass, each with its reason (docs/architecture.md,
# "Layers"). Both checks leave these edges out.
EXCEPTIONS = {
    # The errors that carry a bulk call's result name its types; for type checkers only.
    ("audiencekit.errors", "audiencekit.models"): "type-only: PartialFailureError.result",
    # The shared budget is chosen by name when a transport is made; a postgresql:// name is a
    # PostgresBudget, which lives with the PostgreSQL store (its driver, its connection rules).
    (
        "audiencekit.core.rate",
        "audiencekit.state.postgres",
    ): "lazy: only for a postgresql:// budget",
    # The store contract builds its default and picks a store by location (StateStore(path) is
    # a SqliteStateStore, as Path(...) is a PosixPath; StateStore.open(url)).
    ("audiencekit.state.base", "audiencekit.state.sqlite"): "lazy: StateStore(path)",
    ("audiencekit.state.base", "audiencekit.state._open"): "lazy: StateStore.open",
    # The registry types a provider's emulator factory.
    ("audiencekit.providers._registry", "audiencekit.testing._app"): "type-only: EmulatorApp",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "facade"
    top = parts[1]
    if top in ("providers", "state", "testing", "cli", "workflows", "core"):
        return "vocabulary" if ".".join(parts[1:3]) in CORE_VOCABULARY else top
    if top == "options":  # the public face of core's settings (RetryPolicy, PollPolicy, ...)
        return "core"
    if top == "telemetry":  # OpenTelemetry hooks: the transport and the workflows call them
        return "core"
    if top in ("__main__",):
        return "cli"
    if top == "demo":
        return "workflows"
    if top in VOCABULARY:
        return "vocabulary"
    raise AssertionError(f"{module}: a module outside the floors (add it to one)")


def imports(path: Path, known: set[str]) -> Iterator[tuple[str, str, int]]:
    """(module imported, name imported or "", line) for every import statement of ``path``."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in known:
                    yield submodule, "", node.lineno
                else:
                    yield source, alias.name, node.lineno


def graph(paths: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``paths`` it imports, the exceptions left out."""
    known = set(paths)
    return {
        name: {
            target
            for target, _, _ in imports(path, known)
            if target in known and target != name and (name, target) not in EXCEPTIONS
        }
        for name, path in paths.items()
    }


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def climbs(edges: Mapping[str, set[str]]) -> list[str]:
    return [
        f"{source} ({floor(source)}) imports {target} ({floor(target)})"
        for source, targets in sorted(edges.items())
        for target in sorted(targets)
        if FLOORS.index(floor(target)) > FLOORS.index(floor(source))
        and not (floor(source) == "testing" and floor(target) != "cli")
    ]


def test_no_module_imports_a_floor_above_its_own() -> None:
    assert climbs(graph(MODULES)) == []


def test_every_exception_is_still_needed() -> None:
    known = set(MODULES)
    edges = {name: {t for t, _, _ in imports(path, known)} for name, path in MODULES.items()}
    assert [pair for pair in sorted(EXCEPTIONS) if pair[1] not in edges[pair[0]]] == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert cycles(graph(MODULES)) == []


def test_the_checks_can_fail() -> None:
    """A core module importing a workflow, and two modules importing each other, are caught."""
    edges = {name: set(targets) for name, targets in graph(MODULES).items()}
    edges["audiencekit.core.bulk"].add("audiencekit.workflows._sync")
    edges["audiencekit.models"].add("audiencekit.core.bulk")
    assert climbs(edges) == [
        "audiencekit.core.bulk (core) imports audiencekit.workflows._sync (workflows)",
        "audiencekit.models (vocabulary) imports audiencekit.core.bulk (core)",
    ]
    assert any({"audiencekit.core.bulk", "audiencekit.models"} <= set(c) for c in cycles(edges))


def private_imports(path: Path, package: str) -> list[str]:
    """The imports of ``path`` that reach a private module or name of audiencekit outside
    ``package``, or the internal ``audiencekit.core``: what a provider written outside this
    repository could not rely on."""
    found = []
    for source, name, line in imports(path, set(MODULES)):
        if source.split(".")[0] != "audiencekit" or f"{source}.".startswith(f"{package}."):
            continue
        internal = source.split(".")[1:2] == ["core"] or (source, name) == ("audiencekit", "core")
        if internal or any(p.startswith("_") for p in source.split(".")) or name.startswith("_"):
            found.append(f"{path.relative_to(ROOT)}:{line} {source} {name}".rstrip())
    return found


PROVIDER_PACKAGES = sorted(p.parent for p in (PACKAGE / "providers").glob("*/__init__.py"))


@pytest.mark.parametrize("package", PROVIDER_PACKAGES, ids=lambda p: p.name)
def test_built_in_providers_use_only_the_public_seam(package: Path) -> None:
    """Dexatel and Batch are written as an outside provider is (``audiencekit.providers.base``,
    ``audiencekit.providers.wire`` and the public vocabulary): no private name of the core."""
    name = module_name(package / "__init__.py")
    assert [
        hit for path in sorted(package.rglob("*.py")) for hit in private_imports(path, name)
    ] == []


def test_the_third_party_provider_passes_the_same_check() -> None:
    acme = ROOT / "tests" / "thirdparty" / "acme.py"
    assert private_imports(acme, "tests.thirdparty") == []
    assert private_imports(PACKAGE / "core" / "bulk.py", "audiencekit.providers.acme") != []
