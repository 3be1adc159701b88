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
