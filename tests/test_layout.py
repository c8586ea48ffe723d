"""The house's floors (README, "Layout"): a package imports only from the floors below it.

leaves -> data -> models -> meta/transfer/bandits -> stack -> eval -> cli/serve. Read from the
source (every import in thaw/, inside functions and TYPE_CHECKING blocks too), and checked again
by importing each floor in that order in a fresh interpreter.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

THAW = Path(__file__).resolve().parents[1] / "thaw"

FLOORS: list[dict[str, tuple[str, ...]]] = [
    {"leaves": ("thaw._version", "thaw.errors", "thaw.compute", "thaw.distributed")},
    {"data": ("thaw.data",)},
    # The registry names every model, importing each by its dotted name on first use only; the
    # persistence finds a saved model's class there.
    {"models": ("thaw.models", "thaw.registry", "thaw.persist")},
    {"meta": ("thaw.meta",), "transfer": ("thaw.transfer",), "bandits": ("thaw.bandits",)},
    {"stack": ("thaw.stack",)},
    {"eval": ("thaw.eval",)},
    {"cli/serve": ("thaw.cli", "thaw.serve", "thaw.__main__")},
]
"""Floor by floor, bottom first; the packages on one floor stand side by side and import none
of each other. A package's command line (its cli.py) is on the top floor."""
TOP = len(FLOORS) - 1


def module_name(path: Path) -> str:
    parts = list(path.relative_to(THAW.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(THAW.rglob("*.py"))}


def floor_of(module: str) -> tuple[int, str] | None:
    """(floor, package) of a module of thaw; None for one that stands on no floor."""
    if module.rsplit(".", 1)[-1] == "cli":
        return TOP, "cli/serve"
    for level, floor in enumerate(FLOORS):
        for package, prefixes in floor.items():
            if any(module == p or module.startswith(p + ".") for p in prefixes):
                return level, package
    return None


def place(module: str) -> tuple[int, str]:
    found = floor_of(module)
    assert found is not None, f"{module} stands on no floor: give it one in FLOORS and in the README's layout"
    return found


def imports(module: str) -> set[str]:
    """The modules of thaw that ``module`` imports anywhere in its source."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # ``from thaw import errors`` imports the module thaw.errors, not the package root.
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {m for m in found if m == "thaw" or m.startswith("thaw.")}


def test_every_module_stands_on_a_floor():
    # the package root is left out: the public API, made of every floor on first use
    unplaced = [m for m in MODULES if m != "thaw" and floor_of(m) is None]
    assert len(MODULES) > 1 and not unplaced, f"on no floor (give them one in FLOORS and the README): {unplaced}"


@pytest.mark.parametrize("module", [m for m in MODULES if m != "thaw"])
def test_no_module_imports_a_floor_above_its_own_or_a_package_beside_it(module):
    level, package = place(module)
    for target in sorted(imports(module)):
        assert target != "thaw", f"{module} imports the package root; import the module it needs"
        their_level, their_package = place(target)
        assert their_level <= level, (f"{module} ({package}) imports {target}, on a higher floor "
                                      f"({their_package})")
        assert their_level < level or their_package == package, (
            f"{module} ({package}) imports {target} ({their_package}), a package beside it on its floor")


def test_importing_the_floors_in_order_pulls_in_nothing_from_above():
    floors = [sorted(m for m in MODULES if m != "thaw" and place(m)[0] == level) for level in range(TOP)]
    code = "\n".join([
        "import importlib, sys",
        f"floors = {floors!r}",
        "for level, modules in enumerate(floors):",
        "    for module in modules:",
        "        importlib.import_module(module)",
        "    above = sorted(m for m in sys.modules if any(m in f for f in floors[level + 1:]))",
        "    assert not above, (floors[level], above)",
    ])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
