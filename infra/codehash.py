"""The code a cached value depends on, as one hash: cache keys change when that code changes.

Rule (sound for code reached through names and imports; conservative at module granularity):

1. A *producer* is a function, class or module handed to ``code_hash`` (a ``functools.partial``
   counts as its function, a bound method as its function and its class, a callable object as its
   class). A function or class contributes its own source text (``inspect.getsource``), and so does
   every function, class or module-level statement *of the same module* that its body names or
   that it derives from (a base class), followed recursively: a constant, a table of functions,
   and every top-level statement that mutates that name (``X.update(...)``, ``X[k] = v``,
   ``X.attr = v``, also inside a top-level ``for``/``if``). So editing an unrelated function beside
   the producer does not invalidate anything, while editing a constant it reads does.
2. Every other project module the producer reaches (a module it names, the module of a function
   or class it names or derives from, a module it imports inside its body) contributes the source
   of its file and, transitively, of every project module that file imports
   (``import``/``from`` statements anywhere in the file, lazy imports inside functions included).
3. *Data files* are declared, not discovered: a producer that reads a file shipped with the package
   (``llm/data/idk_answers.txt``) is handed to ``code_hash`` with that file's path beside it
   (``code_hash(fn, PACKAGED_IDK)``); the file's name and bytes are hashed. Only the producers
   that read the file declare it, so editing it re-runs exactly those.
4. The package version (``npo-unlearning``) is added, so a release never reuses older caches.

A producer whose code cannot be read (a builtin, a C function, an object that is not callable,
a callable whose class has no source) raises ``TypeError`` rather than hashing to nothing.
*Project* modules are those of ``PROJECT_PACKAGES``; library code (numpy, torch, ...) is keyed
by the versions the caller puts into its config where it matters. Code reached only through
``importlib``/``getattr`` strings, a mutation made by calling a function (a registering
decorator), and attribute lookups on objects (``self.x``) are not followed beyond the rule above;
the compute paths do not rely on them to reach code outside the modules they import.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import os
import sys
import types
from functools import lru_cache
from importlib import metadata, util
from pathlib import Path

__all__ = ["PROJECT_PACKAGES", "code_hash", "module_closure", "module_source", "data_source"]

PROJECT_PACKAGES = ("infra", "theory", "simulations", "llm", "figures")
DISTRIBUTION = "npo-unlearning"


def code_hash(*producers, packages=None) -> str:
    """sha256 (16 hex digits) of the code the producers depend on, by the rule above."""
    packages = PROJECT_PACKAGES if packages is None else packages
    sources: dict[str, str] = {}
    modules: set[str] = set()
    data: dict[str, bytes] = {}
    todo = []
    for producer in producers:
        if isinstance(producer, os.PathLike):
            data[Path(producer).name] = data_source(producer)
        else:
            todo += _readable(producer)
    # a producer's own module is followed like project code (a script's or a test's function)
    own = {_module_name(p) for p in todo if not isinstance(p, types.ModuleType)}
    while todo:
        obj = todo.pop()
        if isinstance(obj, types.ModuleType):
            name = _module_name(obj)
            if _is_project(name, packages):
                modules.add(name)
            continue
        obj = inspect.unwrap(obj) if callable(obj) else obj
        module = _module_name(obj)
        if not (isinstance(obj, (types.FunctionType, type))
                and (_is_project(module, packages) or module in own)):
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
                continue
            if name is not None and not isinstance(dep, (types.FunctionType, type, types.ModuleType)):
                # a value (a constant, a table, a partial): where does the name come from?
                assigned, imported = _symbols(module)
                if name in assigned and f"{module}:{name}" not in sources:
                    text, refs = assigned[name]
                    sources[f"{module}:{name}"] = text
                    names += [(n, g[n]) for n in refs if n in g]
                elif name in imported and _is_project(imported[name], packages):
                    modules.add(imported[name])
            for target in _followed(dep):   # the code a value runs (a partial's function, ...)
                if isinstance(target, types.ModuleType):
                    todo.append(target)
                elif isinstance(target, (types.FunctionType, type)) and _module_name(target) == module:
                    todo.append(target)                     # same module: function-level
                elif isinstance(target, (types.FunctionType, type)):
                    if _is_project(_module_name(target), packages):
                        modules.add(_module_name(target))   # elsewhere: its whole module closure
    h = hashlib.sha256(_version().encode())
    for key in sorted(sources):
        h.update(f"\0{key}\0{sources[key]}".encode())
    for name in sorted(module_closure(modules, packages)):
        h.update(f"\0{name}\0".encode() + module_source(name))
    for name in sorted(data):
        h.update(f"\0data:{name}\0".encode() + data[name])
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


def data_source(path) -> bytes:
    """The bytes of a declared data file (tests replace this to simulate an edit)."""
    return Path(path).read_bytes()


# ---- helpers ---------------------------------------------------------------------------------

def _readable(producer) -> list:
    """A producer as the functions, classes and modules whose source stands for it; TypeError for
    one whose code cannot be read (it would otherwise hash to nothing and never miss)."""
    targets = [t for t in _followed(producer)
               if isinstance(t, types.ModuleType) or _has_source(t)]
    if not targets:
        raise TypeError(f"code_hash cannot read the code of {producer!r}: pass the project "
                        f"function, class or module that does the work")
    return targets


def _followed(obj) -> list:
    """What a value stands for as code: a partial -> its function (and its callable arguments),
    a bound method -> its function and its class, a callable instance -> its class."""
    if isinstance(obj, functools.partial):
        return _followed(obj.func) + [t for a in (*obj.args, *obj.keywords.values())
                                      if callable(a) for t in _followed(a)]
    if isinstance(obj, types.MethodType):
        owner = obj.__self__ if isinstance(obj.__self__, type) else type(obj.__self__)
        return _followed(obj.__func__) + [owner]
    if isinstance(obj, (types.FunctionType, type, types.ModuleType)):
        return [obj]
    if callable(obj) and not isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)) \
            and _has_source(type(obj)):
        return [type(obj)]
    return [obj]   # a plain value: the caller decides (a named constant is read from its source)


def _has_source(obj) -> bool:
    if not isinstance(obj, (types.FunctionType, type)):
        return False
    try:
        _source(inspect.unwrap(obj) if callable(obj) else obj)
    except (OSError, TypeError):
        return False
    return True


def _referenced(obj):
    """(name, value) pairs a function's or class's body names: globals, closure cells (name None),
    lazily imported modules (value: the module's dotted name)."""
    if isinstance(obj, types.FunctionType):
        funcs = [obj]
    else:  # a class: its base classes, methods, static/class methods and property accessors
        for base in obj.__bases__:
            if base is not object:
                yield None, base
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
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import)):
            continue
        if isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            for a in node.names:
                imported[a.asname or a.name] = base
            continue
        # an assignment, or a statement that mutates names (X.update(...), X[k] = v, a for loop
        # filling a table): its text counts for every name it binds or mutates
        segment = ast.get_source_segment(text, node) or ""
        refs = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        for name in _bound_or_mutated(node):
            old = assigned.get(name, ("", set()))
            assigned[name] = (old[0] + segment, old[1] | refs)
    return assigned, imported


def _bound_or_mutated(node) -> set[str]:
    """Names a top-level statement assigns (``X = ...``, ``X[k] = ...``, ``X.a = ...``), deletes
    from, or calls a method on (``X.update(...)``, ``X.append(...)``), anywhere inside it."""
    out = set()
    for n in ast.walk(node):
        if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Delete, ast.For)):
            targets = (n.targets if isinstance(n, (ast.Assign, ast.Delete))
                       else [n.target])
            out |= {t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name)}
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            root = n.func.value
            while isinstance(root, (ast.Attribute, ast.Subscript)):
                root = root.value
            if isinstance(root, ast.Name):
                out.add(root.id)
    return out


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
