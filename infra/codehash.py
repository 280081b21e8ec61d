"""The code a cached value depends on, as one hash: cache keys change when that code changes.

Rule (sound for code reached through names and imports; conservative at module granularity):

1. A *producer* is a function, class or module handed to ``code_hash``. A function or class
   contributes its own source text (``inspect.getsource``), and so does every function, class or
   module-level assignment (a constant, a table of functions) *of the same module* that its body
   names, followed recursively; so editing an unrelated function beside the producer does not
   invalidate anything, while editing a constant it reads does.
2. Every other project module the producer reaches (a module it names, the module of a function
   or class it names, a module it imports inside its body) contributes the source of its file and,
   transitively, of every project module that file imports (``import``/``from`` statements
   anywhere in the file, lazy imports inside functions included).
3. The package version (``npo-unlearning``) is added, so a release never reuses older caches.

*Project* modules are those of ``PROJECT_PACKAGES``; library code (numpy, torch, ...) is keyed
by the versions the caller puts into its config where it matters. Code reached only through
``importlib``/``getattr`` strings is not seen; the compute paths do not load code that way.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import sys
import types
from functools import lru_cache
from importlib import metadata, util
from pathlib import Path

__all__ = ["PROJECT_PACKAGES", "code_hash", "module_closure", "module_source"]

PROJECT_PACKAGES = ("infra", "theory", "simulations", "llm", "figures")
DISTRIBUTION = "npo-unlearning"


def code_hash(*producers, packages=None) -> str:
    """sha256 (16 hex digits) of the code the producers depend on, by the rule above."""
    packages = PROJECT_PACKAGES if packages is None else packages
    sources: dict[str, str] = {}
    modules: set[str] = set()
    todo = list(producers)
    while todo:
        obj = todo.pop()
        if isinstance(obj, types.ModuleType):
            name = _module_name(obj)
            if _is_project(name, packages):
                modules.add(name)
            continue
        obj = inspect.unwrap(obj) if callable(obj) else obj
        module = _module_name(obj)
        if not (isinstance(obj, (types.FunctionType, type)) and _is_project(module, packages)):
            continue
        key = f"{module}:{obj.__qualname__}"
        if key in sources:
            continue
        sources[key] = _source(obj)
        g = obj.__globals__ if isinstance(obj, types.FunctionType) else vars(sys.modules[obj.__module__])
        names = list(_referenced(obj))
        while names:
            name, dep = names.pop()
            if isinstance(dep, str):  # a module imported inside the body
                if _is_project(dep, packages):
                    modules.add(dep)
            elif isinstance(dep, types.ModuleType):
                todo.append(dep)
            elif isinstance(dep, (types.FunctionType, type)) and _module_name(dep) == module:
                todo.append(dep)                        # same module: function-level
            elif isinstance(dep, (types.FunctionType, type)):
                if _is_project(_module_name(dep), packages):
                    modules.add(_module_name(dep))      # elsewhere: its whole module closure
            elif name is not None:                      # a value: where does the name come from?
                assigned, imported = _symbols(module)
                if name in assigned and f"{module}:{name}" not in sources:
                    text, refs = assigned[name]
                    sources[f"{module}:{name}"] = text
                    names += [(n, g[n]) for n in refs if n in g]
                elif name in imported and _is_project(imported[name], packages):
                    modules.add(imported[name])
    h = hashlib.sha256(_version().encode())
    for key in sorted(sources):
        h.update(f"\0{key}\0{sources[key]}".encode())
    for name in sorted(module_closure(modules, packages)):
        h.update(f"\0{name}\0".encode() + module_source(name))
    return h.hexdigest()[:16]


def module_closure(names, packages=None) -> set[str]:
    """``names`` and every project module their files import, transitively."""
    packages = PROJECT_PACKAGES if packages is None else packages
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen or _origin(name) is None:
            continue
        seen.add(name)
        todo += [m for m in _imports(name) if _is_project(m, packages)]
    return seen


def module_source(name: str) -> bytes:
    """The bytes of a module's file (tests replace this to simulate an edit)."""
    return _read(_origin(name))


# ---- helpers ---------------------------------------------------------------------------------

def _referenced(obj):
    """(name, value) pairs a function's or class's body names: globals, closure cells (name None),
    lazily imported modules (value: the module's dotted name)."""
    if isinstance(obj, types.FunctionType):
        funcs = [obj]
    else:  # a class: its methods, static/class methods and property accessors
        funcs = []
        for v in vars(obj).values():
            if isinstance(v, (staticmethod, classmethod)):
                v = v.__func__
            funcs += [v.fget, v.fset, v.fdel] if isinstance(v, property) else [v]
        funcs = [f for f in funcs if isinstance(f, types.FunctionType)]
    for f in funcs:
        f = inspect.unwrap(f)
        g = f.__globals__
        for code in _code_objects(f.__code__):
            for name in code.co_names:
                if name in g:
                    yield name, g[name]
                elif "." in name or name in sys.modules:
                    yield name, name      # IMPORT_NAME of an import inside the body
        for cell in f.__closure__ or ():
            try:
                yield None, cell.cell_contents
            except ValueError:  # an empty cell
                pass


def _source(obj) -> str:
    """``inspect.getsource``, memoised per file version (it tokenizes the whole file each time)."""
    path = inspect.getsourcefile(obj)
    try:
        stamp = Path(path).stat().st_mtime_ns if path else 0
    except OSError:
        stamp = 0
    line = obj.__code__.co_firstlineno if isinstance(obj, types.FunctionType) else 0
    return _cached_source(obj, path, stamp, obj.__qualname__, line)


@lru_cache(maxsize=4096)
def _cached_source(obj, path, stamp, qualname, line) -> str:
    return inspect.getsource(obj)


def _code_objects(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _module_name(obj) -> str:
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", "")
    if name == "__main__":  # run as ``python -m pkg.mod``: the module's real name
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        name = spec.name if spec else name
    return name or ""


def _is_project(name: str, packages) -> bool:
    return bool(name) and name.split(".")[0] in packages


@lru_cache(maxsize=None)
def _origin(name: str) -> str | None:
    try:
        spec = util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec and spec.origin and spec.origin.endswith(".py") else None


def _imports(name: str) -> list[str]:
    path = _origin(name)
    return list(_parse_imports(path, Path(path).stat().st_mtime_ns, name)) if path else []


@lru_cache(maxsize=None)
def _parse_imports(path: str, mtime_ns: int, name: str) -> tuple[str, ...]:
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(_read(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            out.append(base)
            out += [f"{base}.{a.name}" for a in node.names]  # ``from pkg import module``
    return tuple(out)


def _symbols(name: str) -> tuple[dict, dict]:
    """A module's top-level assignments {name: (source, names it uses)} and imported names
    {alias: module it comes from}."""
    path = _origin(name)
    if path is None:
        return {}, {}
    return _parse_symbols(path, Path(path).stat().st_mtime_ns, name)


@lru_cache(maxsize=None)
def _parse_symbols(path: str, mtime_ns: int, name: str) -> tuple[dict, dict]:
    text = _read(path).decode("utf-8")
    tree = ast.parse(text)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    assigned, imported = {}, {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            segment = ast.get_source_segment(text, node) or ""
            refs = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)} if node.value else set()
            for target in targets:
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        old = assigned.get(n.id, ("", set()))
                        assigned[n.id] = (old[0] + segment, old[1] | refs)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            for a in node.names:
                imported[a.asname or a.name] = base
    return assigned, imported


def _absolute(node: ast.ImportFrom, package: str) -> str:
    base = node.module or ""
    if node.level:
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
    return base


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


@lru_cache(maxsize=None)
def _version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"
