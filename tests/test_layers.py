"""Imports flow one way: domain, contract, workflow, activities, processes.

The workflow is the deterministic core that callers install: it may not reach
up into the activities (asyncpg, SQL) or the processes (HTTP, CLI); the
activities may not reach into the processes. A module's layer is read from
its path, every import in it (at any depth, including those inside functions)
is parsed, and an import of a higher layer fails here with the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("workflows", "activities", "worker", "tools")

# Lowest first; a module may import its own layer or any below it.
LAYERS = ("domain", "contract", "workflow", "activities", "processes")


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name of this project, or None for anything else."""
    parts = module.split(".")
    top = parts[0]
    if top == "workflows":
        if len(parts) == 1:
            return "workflow"
        return {"domain": "domain", "contract": "contract"}.get(parts[1], "workflow")
    if top == "activities":
        return "activities"
    if top in ("worker", "tools"):
        return "processes"
    return None


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every project module ``path`` imports, with the line, resolving relative imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from workflows import contract`` imports the module workflows.contract.
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return [(line, name) for line, name in found if layer_of(name) is not None and _exists(name)]


def _exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def upward_imports() -> list[str]:
    problems = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            own = layer_of(module_name(path))
            assert own is not None, path
            for line, name in imported_modules(path):
                other = layer_of(name)
                assert other is not None
                if LAYERS.index(other) > LAYERS.index(own):
                    problems.append(f"{path.relative_to(ROOT)}:{line}: {own} imports {name} ({other})")
    return problems


def test_no_module_imports_from_a_layer_above_it() -> None:
    problems = upward_imports()
    assert not problems, "imports against the flow:\n" + "\n".join(problems)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The check itself can fail: an import of the ledger from the domain is caught."""
    probe = ROOT / "workflows" / "domain" / "_layer_probe.py"
    probe.write_text("from activities import exceptions\n")
    try:
        problems = upward_imports()
    finally:
        probe.unlink()
    assert any("_layer_probe.py:1: domain imports activities.exceptions" in p for p in problems), problems


def test_the_workflow_imports_only_the_domain_and_the_contract_at_module_level() -> None:
    """The deterministic core installs without asyncpg, httpx or FastAPI."""
    heavy = ("asyncpg", "httpx", "fastapi", "uvicorn")
    problems = []
    for path in sorted((ROOT / "workflows").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            problems += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in heavy
            ]
    assert not problems, problems


def test_modules_stay_small_or_say_why() -> None:
    """A module over ~350 lines says in its docstring why it is one module."""
    long = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            if text.count("\n") <= 380:
                continue
            docstring = ast.get_docstring(ast.parse(text)) or ""
            if "one module" not in docstring.lower():
                long.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not long, "modules over ~350 lines without a reason in the docstring: " + ", ".join(long)


# The exchange's side of the dev stack and of the demo: what an exchange could run on another
# machine, talking to the case manager through its API only. Its modules may not reach the ledger,
# however indirectly (a package's __init__ counts: importing a module runs its packages' first).
EXCHANGE_SIDE = ("worker/exchange", "worker/demo/exchange.py", "worker/demo/roles.py", "worker/demo/crash.py")


def module_path(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if (path / "__init__.py").exists() else path.with_suffix(".py")


def import_chains(start: str) -> dict[str, list[str]]:
    """Every project module importing ``start`` runs, each with the chain of imports that leads to it."""
    chains: dict[str, list[str]] = {}
    pending = [(start, [start])]
    while pending:
        module, chain = pending.pop()
        parts = module.split(".")
        for name in [".".join(parts[:i]) for i in range(1, len(parts))] + [module]:
            if name in chains or not _exists(name):
                continue
            here = chain if name == module else [*chain[:-1], name]
            chains[name] = here
            pending.extend(
                (imported, [*here, imported]) for _, imported in imported_modules(module_path(name))
            )
    return chains


def exchange_side_modules() -> list[str]:
    modules = []
    for entry in EXCHANGE_SIDE:
        path = ROOT / entry
        modules += [module_name(p) for p in (sorted(path.rglob("*.py")) if path.is_dir() else [path])]
    return modules


def reaches_activities(modules: list[str]) -> list[str]:
    problems = []
    for module in modules:
        for name, chain in sorted(import_chains(module).items()):
            if name == "activities" or name.startswith("activities."):
                problems.append(" -> ".join(chain))
                break
    return problems


def test_the_exchange_side_imports_nothing_of_the_ledger() -> None:
    """The sample exchange's loader and the demo's exchange go through the API, never the ledger."""
    modules = exchange_side_modules()
    assert {"worker.exchange.sample", "worker.demo.exchange", "worker.demo.crash"} <= set(modules), modules
    problems = reaches_activities(modules)
    assert not problems, "the exchange side imports activities:\n" + "\n".join(problems)


def test_the_exchange_check_follows_imports_through_other_modules() -> None:
    """The check can fail: a module importing the stack (which imports the ledger) is caught, with the chain."""
    probe = ROOT / "worker" / "exchange" / "_probe.py"
    probe.write_text("def later() -> None:\n    from worker.stack import embedded_stack\n")
    try:
        problems = reaches_activities(exchange_side_modules())
    finally:
        probe.unlink()
    assert any(
        p.startswith("worker.exchange._probe -> worker.stack") and "activities" in p for p in problems
    ), problems
    # And what the operator's side of the demo reads, it is allowed to: the check is not blind.
    assert reaches_activities(["worker.demo.summary"])
