"""A role's closure: its entry module and every ``enclaverec`` module that module imports,
transitively, wherever the import statement is (module level or inside a function).

Found with :mod:`ast`, never by importing: the closure is what the simulated MRENCLAVE
measures and what a Gramine manifest trusts, so it must not depend on running the code it
measures. The rules:

- ``import a.b.c`` imports ``a``, ``a.b`` and ``a.b.c`` (each parent package runs its
  ``__init__``);
- ``from M import y`` imports ``M`` and, when ``M.y`` is a module, ``M.y`` too; relative
  forms (``from . import x``, ``from ..x import y``) are resolved against the importing
  module's package;
- ``importlib.import_module("enclaverec.x")`` and ``__import__("enclaverec.x")`` with a
  literal string count as imports; with anything else inside the package they are refused
  (registries import their entries explicitly), since the closure could not see them;
- imports under ``if TYPE_CHECKING:`` never run and are not followed.

Third-party and standard-library imports are not followed (the Gramine manifest's probe
finds their files).
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterable
from pathlib import Path

from enclaverec.errors import UsageError

PACKAGE = "enclaverec"

_PARSE_LOCK = threading.Lock()
"""CPython 3.11 can fail ``ast.parse`` run in two threads at once ("AST constructor
recursion depth mismatch", gh-106905); roles measure themselves while servers run."""

_PARSE_ATTEMPTS = 5


def parse_source(source: bytes, path: Path) -> ast.Module:
    """``ast.parse``, serialised and retried on CPython 3.11's spurious "AST constructor
    recursion depth mismatch" (gh-106905). The lock covers our own callers only: the
    standard library's ``traceback`` also parses (to place its carets) when another thread
    logs an exception, and that race shows up as this SystemError, never as a wrong tree."""
    with _PARSE_LOCK:
        for attempt in range(_PARSE_ATTEMPTS):
            try:
                return ast.parse(source, filename=str(path))
            except SystemError as exc:
                if "recursion depth mismatch" not in str(exc) or attempt == _PARSE_ATTEMPTS - 1:
                    raise
    raise AssertionError("unreachable")


def module_file(name: str, root: Path) -> Path | None:
    """The source file of package module ``name`` (dotted) under package directory
    ``root``, or None when there is no such module."""
    parts = name.split(".")
    if parts[0] != root.name:
        return None
    base = root.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    candidate = base.with_suffix(".py")
    return candidate if len(parts) > 1 and candidate.is_file() else None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _literal_import(node: ast.Call) -> str | None | bool:
    """The module a ``importlib.import_module(...)``/``__import__(...)`` call names: its
    literal string, ``False`` when the argument is not a literal, None when the call is
    not an import call."""
    func = node.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__")
    )
    if not named or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return False


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_modules(name: str, path: Path, root: Path) -> set[str]:
    """The package modules that module ``name`` (source ``path``) imports."""
    try:
        source = path.read_bytes()
        tree = parse_source(source, path)
    except SyntaxError as exc:
        raise UsageError(f"{path} does not parse: {exc}") from exc
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    top = root.name
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top:
                    found.update(_parents(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                if node.level > 1:
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != top:
                continue
            found.update(_parents(base))
            for alias in node.names:
                if alias.name != "*" and module_file(f"{base}.{alias.name}", root) is not None:
                    found.add(f"{base}.{alias.name}")
        elif isinstance(node, ast.Call):
            target = _literal_import(node)
            if target is False:
                raise UsageError(
                    f"{path}:{node.lineno}: an import by a computed name cannot be measured; "
                    "import the module explicitly"
                )
            if isinstance(target, str) and target.split(".")[0] == top:
                found.update(_parents(target))
    return found


def closure(entry: str, root: Path) -> tuple[str, ...]:
    """Dotted names of ``entry`` and every package module it imports, transitively,
    sorted. ``root`` is the package directory (``.../enclaverec``)."""
    root = root.resolve()
    if module_file(entry, root) is None:
        raise UsageError(f"the entry module {entry} does not exist under {root}")
    seen: set[str] = set()
    pending = _parents(entry)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        path = module_file(name, root)
        if path is None:
            raise UsageError(f"{name} is imported in the closure of {entry} but does not exist")
        seen.add(name)
        pending.extend(imported_modules(name, path, root) - seen)
    return tuple(sorted(seen))


def closure_files(entry: str, root: Path) -> tuple[Path, ...]:
    """The source files of :func:`closure`, sorted by path."""
    root = root.resolve()
    files = {module_file(name, root) for name in closure(entry, root)}
    return tuple(sorted(path for path in files if path is not None))
