"""Stage the function app for azd: copy exactly what the app needs into infra/app/.

azure.yaml's service `batchdrop` is infra/app/, filled by this script (its prerestore and
prepackage hooks) with function_app.py, host.json, requirements.txt and the repository's own
packages that function_app.py imports, directly or through them (functions/, shared/,
conventions/ today). Everything else in the repository (the Batch emulator, the local host,
tests, node_modules, .venv) stays out of the package that Flex Consumption builds remotely.

Guarantees: the result depends only on the repository's files (a second run gives the same
files); staged packages are found by reading imports, so a package the app starts importing is
staged without changing this script; the local-only packages (LOCAL_ONLY) are never staged: an
import of one from the app is an error, not a bigger package. Standard library only.
"""
from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / "infra" / "app"
ROOT_FILES = ("function_app.py", "host.json", "requirements.txt")
LOCAL_ONLY = frozenset({"batchemu", "devhost", "tests", "scripts", "benchmarks", "examples", "infra"})
KEEP = frozenset({"README.md", ".venv"})  # what staging leaves in infra/app, besides azd's virtual environment


def venv_name(target: Path) -> str:
    """The virtual environment azd's Python restore makes in a service directory: '<dir name>_env'."""
    return f"{target.name}_env"


def funcignore(target: Path) -> str:
    """What azd must leave out of the package (a .funcignore replaces azd's own exclusions)."""
    return "".join(f"{line}\n" for line in (".venv/", f"{venv_name(target)}/", "__pycache__/", "*.pyc", "README.md"))


class StageError(Exception):
    pass


def local_modules(root: Path = ROOT) -> set[str]:
    """Top-level names importable from the repository root: packages (with __init__.py) and modules."""
    names = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    names |= {p.stem for p in root.glob("*.py")}
    return names


def imported_top_level(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def packages_needed(root: Path = ROOT) -> list[str]:
    """The repository's packages function_app.py needs, transitively, in name order."""
    local = local_modules(root)
    needed: set[str] = set()
    todo = [root / "function_app.py"]
    while todo:
        path = todo.pop()
        for name in imported_top_level(path) & local:
            if name in needed or name == "function_app":
                continue
            if name in LOCAL_ONLY:
                raise StageError(f"{path.relative_to(root)} imports {name}, which is local tooling and never "
                                 f"deployed; the function app must not depend on it")
            needed.add(name)
            todo.extend((root / name).rglob("*.py") if (root / name).is_dir() else [root / f"{name}.py"])
    return sorted(needed)


def stage(root: Path = ROOT, target: Path = STAGE) -> list[str]:
    """Replace target's contents (but KEEP) with the app's files; the staged top-level names."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in target.iterdir():
        if entry.name in KEEP or entry.name == venv_name(target):
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    staged = []
    for name in ROOT_FILES:
        shutil.copy2(root / name, target / name)
        staged.append(name)
    for name in packages_needed(root):
        source = root / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(root / f"{name}.py", target / f"{name}.py")
        staged.append(name)
    (target / ".funcignore").write_text(funcignore(target), encoding="utf-8")
    return staged


def main() -> int:
    try:
        staged = stage()
    except StageError as e:
        print(f"batchdrop stage: error: {e}", file=sys.stderr)
        return 1
    print(f"batchdrop stage: infra/app holds {', '.join(staged)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
