"""One-off maintainer's tool: lay llm/ out by concern (issue 21, part 4).

    python tools/relayout.py --dry-run      # print what it would move and rewrite; change nothing
    python tools/relayout.py                # do it (git mv + rewrite) on a clean tree; review, test, commit

It is a script rather than a commit because the move lands on a tree that other branches were
editing: run it once on the merged main, run the suite, commit. What it does, in order:

1. Inventory ``llm/``: every file or folder it does not know (``MOVES``, ``KEEP``, ``PACKAGES``,
   ``DATA_FILES``, the new subpackages) is printed and nothing is changed (exit 2): map it in
   ``MOVES`` first. A known module that is absent (deleted on some branch) is skipped. A tree
   with uncommitted changes, or a file to move that git does not track, is refused before the
   first move, so a run moves all or nothing.
2. ``git mv`` each module to its new place (a new subpackage gets an ``__init__.py`` with its
   one-line purpose), the packaged data with its code, and ``llm/methods/`` (if present) as a whole
   to ``llm/train/methods/``. Package ``llm/train/`` and module ``llm/train.py`` are different
   names on disk, so the order of the moves does not matter; they only collide for Python, and
   by the end only the package is left.
3. Rewrite every reference in the tracked *.py, *.md, *.yaml, *.toml, *.sh files, .ci/ and
   configs/: dotted paths ``llm.X[.attr]`` (imports, ``python -m``, importlib / monkeypatch
   strings, llm/__main__.py ``COMMANDS``); ``from llm import X, Y`` (split per subpackage, aliased
   to the old name where the file name changed, so the code below the import is untouched); file
   paths ``llm/X.py``, and a bare ``X.py`` inside llm/ or on a line beside an llm/ path; the
   package list and package data in pyproject.toml; ``Path(__file__).parents[N]`` in a module
   moved one folder down (N + 1); the identifiers in ``RENAMES``; and ``python -m llm.tofu_claims``
   -> ``python -m llm claims``. This file, tests/test_relayout.py and the layout doc are left alone.
4. Swap docs/architecture-llm-layout.md (the new llm/ section, written for the tree after the move)
   into docs/architecture.md, and redraw the llm/ box of its diagram.
5. Print the lines that still look like old module names (a bare ``train.py`` in prose outside
   llm/ on a line naming no llm/ path) for a human to judge: not rewritten, as a bare name there can
   mean something else (simulations/collapse_rate.py).

Idempotent: on a tree it already ran on, every step finds nothing to do (the dotted rewrite does
not touch ``llm.train.loop``: a name that became a package is rewritten only where it is not
followed by one of the package's own modules; bare names and ``parents[N]`` only for the modules
this run moves).

Not handled: a module reached by a computed name (``import_module("llm." + name)``), text in
files other than those above (results/*.json keep the old names they were written with), and
code hashes: every moved module hashes differently, so cached stages re-run once (expected).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

#: old module under llm/ -> new module under llm/ (dotted).
MOVES = {
    # data: TOFU splits, prompt formatting, the order items are seen in
    "data": "data.tofu",
    "formatting": "data.formatting",
    "dataplan": "data.order",
    # train: configuration, the loop, what unlearning adds, objectives, checkpoints, distribution
    "config": "train.config",
    "train": "train.loop",
    "train_cli": "train.cli",
    "unlearning": "train.unlearning",
    "losses": "train.losses",
    "checkpoints": "train.checkpoints",
    "distributed": "train.distributed",
    "refcache": "train.refcache",
    "model_setup": "train.model_setup",          # the registry branch's LoRA / checkpointing / DDP / FSDP wrap
    # evaluate: scoring a model, TOFU metrics, MIA, the eval logs and their summaries
    "scoring": "evaluate.scoring",
    "metrics": "evaluate.metrics",
    "mia": "evaluate.mia",
    "eval_mia": "evaluate.membership",
    "eval_logs": "evaluate.logs",
    "eval_summary": "evaluate.summary",
    "evaluate": "evaluate.cli",
    "generation": "evaluate.generation",
    "eval_forward": "evaluate.forward",          # the evalspeed branch's teacher-forced scoring
    "quantize": "evaluate.quantize",
    # pipeline: the run grid, its stages, data subset, what each eval records, result schema, CLI
    "pipeline_plan": "pipeline.plan",
    "pipeline": "pipeline.run",
    "pipeline_stages": "pipeline.stages",
    "pipeline_data": "pipeline.subset",
    "pipeline_eval": "pipeline.recording",
    "pipeline_logs": "pipeline.logs",
    "pipeline_cli": "pipeline.cli",
    "environment": "pipeline.environment",
    # studies: experiments that read or drive the pipeline
    "collapse_rate": "studies.collapse_rate",
    "collapse_rate_setup": "studies.collapse_rate_setup",
    "collapse_rate_report": "studies.collapse_rate_report",
    "lr_sweep": "studies.lr_sweep",
    "lr_sweep_grid": "studies.lr_sweep_grid",
    "tofu_results": "studies.tofu_results",
    "tofu_claims": "studies.tofu_claims",
    "rate_fits": "studies.rate_fits",            # gone on main (theory/fits.py); kept for older trees
    "relearn": "studies.relearn",
    "attacks": "studies.attacks",
    # the per-GPU memory planner: "plan" now means only the pipeline's run grid
    "plan": "memory",
}
#: old package under llm/ -> new package (moved whole, if present).
PACKAGES = {"methods": "train.methods"}
#: packaged data files: old path under llm/ -> new path under llm/ (they move with their code).
DATA_FILES = {"idk_answers.txt": "data/idk_answers.txt"}
#: what stays at the top of llm/.
KEEP = {"__init__.py", "__main__.py", "models.py", "gguf.py"}    # gguf.py: the evalspeed branch's, beside models
#: the new subpackages and their one-line purpose (their __init__.py docstrings).
SUBPACKAGES = {
    "data": "TOFU data: loading the splits, prompt formatting, the seeded order items are seen in.",
    "train": "Training: configuration, the loop, what unlearning adds, objectives, checkpoints, "
             "distribution, the reference cache.",
    "evaluate": "Evaluation: scoring a model, TOFU metrics, membership inference, eval logs and "
                "summaries, the ``python -m llm eval`` CLI.",
    "pipeline": "The TOFU pipeline: the run grid, its stages, the data subset, what each evaluation "
                "records, the result schema, the CLI.",
    "studies": "Studies on top of the pipeline: collapse rate, lr sweep, results reader and claims, "
               "attacks.",
}
#: identifier renames (names that collided): (old, new, module defining it (new path), scope)
#: scope "all": every file; "importers": the defining module and files importing the name from it
#: (or from a module in ``also_from``), plus ``alias.Name`` uses.
RENAMES = [
    ("EvalPlan", "EvalItems", "evaluate.scoring", "all", ()),
    ("Plan", "DataOrder", "data.order", "importers", ("train.loop",)),
    ("Run", "RunLog", "studies.tofu_results", "importers", ()),     # train/loop.py keeps its Run
    ("make_plan", "make_order", "data.order", "all", ()),
    ("PRESETS", "MODEL_PRESETS", "models", "importers", ()),           # pipeline/plan.py keeps PRESETS
]
#: literal text rewrites applied before the module rewrite (old -> new), in every file.
TEXT = [(re.compile(r"python -m llm\.tofu_claims\b"), "python -m llm claims"),
        (re.compile(r"`llm\.tofu_claims`"), "`python -m llm claims`")]
#: the llm/ box of docs/architecture.md's diagram, redrawn.
DIAGRAM = {
    'TRAIN["train.py + unlearning.py + losses.py<br/>fine-tune / unlearn"]':
        'TRAIN["train/<br/>loop.py + unlearning.py + losses.py<br/>fine-tune / unlearn"]',
    'SCORE["scoring.py<br/>evaluate a model"]': 'SCORE["evaluate/<br/>scoring.py: evaluate a model"]',
    'PIPE["pipeline.py<br/>stages:': 'PIPE["pipeline/<br/>run.py + stages.py:',
    'READ["tofu_results.py<br/>read + aggregate logs"]':
        'READ["studies/tofu_results.py<br/>read + aggregate logs"]',
    'CLAIMS["tofu_claims.py<br/>TOFU claims table"]':
        'CLAIMS["studies/tofu_claims.py<br/>TOFU claims table"]',
}
#: whole lines replaced (file -> line start -> new line): README's package row says the new layout.
LINES = {"README.md": {
    "| `llm/` | TOFU data, prompt formatting, models":
        "| `llm/` | by concern: `data/` (TOFU splits, prompt formatting, the data order), `train/` (config, "
        "the loop, unlearning, objectives, checkpoints, DDP or FSDP2, LoRA, the reference cache), "
        "`evaluate/` (scoring, metrics, MIA, eval logs), `pipeline/` (run grid, stages, CLI), "
        "`studies/` (collapse rate, lr sweep, results and the TOFU claims, attacks); `models.py` "
        "(presets, local, hub, GGUF) and `memory.py` (the memory planner, the `plan` command); "
        "[docs/architecture.md](docs/architecture.md) has the table |"}}
LAYOUT_DOC = "docs/architecture-llm-layout.md"
LAYOUT_ANCHOR = "## Where each paper object lives"     # the new section goes before this heading
TEXT_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".cfg", ".ini")
SELF = "tools/relayout.py"
NOT_REWRITTEN = {SELF, "tests/test_relayout.py", LAYOUT_DOC}     # they spell old and new names on purpose


class Stop(Exception):
    """A condition the maintainer must resolve first (one line, exit 2)."""


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise Stop(f"git {' '.join(args)}: {last} (commit or remove it, then run the tool again: "
                   f"the moves done so far are kept and it goes on from there)")
    return done.stdout


# ---- 1. inventory ---------------------------------------------------------------------------------

def inventory(llm: Path) -> tuple[dict, dict, dict]:
    """(module moves, package moves, data moves) still to do, as {old path: new path} under llm/;
    raise Stop naming every entry of llm/ this table does not know."""
    known = (set(KEEP) | {f"{m}.py" for m in MOVES} | set(PACKAGES) | set(DATA_FILES) | set(SUBPACKAGES)
             | {f"{new}.py" for new in MOVES.values() if "." not in new})     # llm/memory.py, moved
    unknown = sorted(p.name for p in llm.iterdir()
                     if p.name not in known and p.name != "__pycache__" and not p.name.endswith(".pyc"))
    if unknown:
        raise Stop("llm/ holds entries this tool does not map: " + ", ".join(unknown)
                   + "; add them to MOVES (or KEEP) in tools/relayout.py and run it again")
    modules = {f"{old}.py": new.replace(".", "/") + ".py" for old, new in MOVES.items()
               if (llm / f"{old}.py").is_file()}
    packages = {old: new.replace(".", "/") for old, new in PACKAGES.items() if (llm / old).is_dir()}
    data = {old: new for old, new in DATA_FILES.items() if (llm / old).is_file()}
    for old, new in {**modules, **packages, **data}.items():
        if (llm / new).exists():
            raise Stop(f"both llm/{old} and llm/{new} exist; keep one and run it again")
    return modules, packages, data


# ---- 2. moves -------------------------------------------------------------------------------------

def move(repo: Path, moves: dict, dry: bool) -> None:
    llm = repo / "llm"
    tracked = set(git(repo, "ls-files", "llm").split("\n"))
    untracked = sorted(old for old in moves if f"llm/{old}" not in tracked
                       and not any(t.startswith(f"llm/{old}/") for t in tracked))
    if untracked:     # checked before the first move, so a run moves all or nothing
        raise Stop("not tracked by git: " + ", ".join(f"llm/{u}" for u in untracked)
                   + "; commit (or remove) them and run it again")
    for name, doc in SUBPACKAGES.items():
        init = llm / name / "__init__.py"
        if not init.exists() and any(new.startswith(name + "/") for new in moves.values()):
            print(f"create llm/{name}/__init__.py")
            if not dry:
                init.parent.mkdir(exist_ok=True)
                init.write_text(f'"""{doc}"""\n')
                git(repo, "add", str(init.relative_to(repo)))
    for old, new in moves.items():
        print(f"git mv llm/{old} llm/{new}")
        if not dry:
            (llm / new).parent.mkdir(parents=True, exist_ok=True)
            git(repo, "mv", f"llm/{old}", f"llm/{new}")


# ---- 3. references --------------------------------------------------------------------------------

def _members(package: str) -> list[str]:
    """The modules a new package will hold (its first dotted level)."""
    return sorted({new.split(".")[1] for new in list(MOVES.values()) + list(PACKAGES.values())
                   if new.startswith(package + ".")})


def dotted_pattern() -> re.Pattern:
    """``llm.OLD`` not inside a longer dotted name; an OLD that became a package is matched only
    where it is not followed by one of the package's own modules (``llm.train.loop`` stays)."""
    alts = []
    for old in sorted(set(MOVES) | set(PACKAGES), key=len, reverse=True):
        members = _members(old)
        guard = ""
        if members:
            names = "|".join(members)
            guard = rf"(?!\.(?:{names})\b)(?!\s+import\s+(?:{names})\b)"
        alts.append(rf"{re.escape(old)}\b{guard}")
    return re.compile(rf"(?<![\w.])llm\.(?:{'|'.join(alts)})")


DOTTED = dotted_pattern()
FROM_LLM = re.compile(r"^(?P<indent>[ \t]*)from llm import (?P<names>[^\n()\\]+?)[ \t]*$", re.M)
PATH = re.compile(r"(?<![\w/.])llm/(?P<old>[A-Za-z_]+)(?P<ext>\.py|\.txt|/|\b)")


def _dotted_sub(m: re.Match) -> str:
    old = m.group(0)[len("llm."):]
    old = re.match(r"\w+", old).group(0)
    return "llm." + {**MOVES, **PACKAGES}[old]


def _from_llm_sub(m: re.Match) -> str:
    """``from llm import a, b as c`` -> one import per destination package."""
    groups: dict[str, list[str]] = {}
    for part in m.group("names").split(","):
        words = part.split()
        if not words:
            continue
        name, alias = words[0], (words[2] if len(words) == 3 and words[1] == "as" else None)
        target = MOVES.get(name) or PACKAGES.get(name)
        if target is None:
            groups.setdefault("llm", []).append(part.strip())
            continue
        package, _, leaf = ("llm." + target).rpartition(".")
        shown = alias or name
        groups.setdefault(package, []).append(leaf if leaf == shown else f"{leaf} as {shown}")
    return "\n".join(f"{m.group('indent')}from {pkg} import {', '.join(names)}"
                     for pkg, names in groups.items())


def _path_sub(m: re.Match) -> str:
    old, ext = m.group("old"), m.group("ext")
    if ext == ".py" and old in MOVES:
        return f"llm/{MOVES[old].replace('.', '/')}.py"
    if ext == ".txt" and f"{old}.txt" in DATA_FILES:
        return f"llm/{DATA_FILES[old + '.txt']}"
    if ext in ("/", "") and old in PACKAGES:
        return f"llm/{PACKAGES[old].replace('.', '/')}{ext}"
    if ext == "" and old in MOVES and old not in SUBPACKAGES:     # ``llm/refcache`` without .py
        return f"llm/{MOVES[old].replace('.', '/')}"
    return m.group(0)


def _rename(text: str, path: str) -> str:
    for old, new, home, scope, also in RENAMES:
        if scope == "all":
            text = re.sub(rf"\b{old}\b", new, text)
            continue
        homes = [home, *also]
        defines = path == f"llm/{home.replace('.', '/')}.py"
        imports = any(re.search(rf"from llm\.{re.escape(h)} import [^\n]*\b{old}\b", text) for h in homes)
        if defines or imports:
            text = re.sub(rf"\b{old}\b", new, text)
        else:   # ``from llm.studies import tofu_results as tr`` ... ``tr.Run``
            for h in homes:
                pkg, _, leaf = h.rpartition(".")
                for alias in re.findall(rf"from llm\.{re.escape(pkg)} import [^\n]*\b{leaf} as (\w+)",
                                        text):
                    text = re.sub(rf"\b{alias}\.{old}\b", f"{alias}.{new}", text)
    return text


def _bare(text: str, path: str, moving: set[str]) -> str:
    """A bare ``X.py`` inside llm/, or on a line that names an llm/ path (``(llm/eval_summary.py,
    eval_logs.py, ...)``), is that llm module: written as its new path. Only for the modules this
    run moves: after the move, a bare ``plan.py`` beside ``llm/pipeline/`` means the new one."""
    if not moving:
        return text
    bare = re.compile(rf"(?<![\w/.])(?P<old>{'|'.join(sorted(moving, key=len, reverse=True))})\.py\b")
    sub = lambda m: f"llm/{MOVES[m.group('old')].replace('.', '/')}.py"  # noqa: E731
    if path.startswith("llm/"):
        return bare.sub(sub, text)
    return "".join(bare.sub(sub, line) if "llm/" in line else line for line in text.splitlines(True))


def rewrite_text(text: str, path: str, moving: set[str] = frozenset()) -> str:
    if path == "pyproject.toml":      # its only references: the package list and the package data
        return _pyproject(text)
    for pattern, new in TEXT:
        text = pattern.sub(new, text)
    if path.endswith(".py"):
        text = FROM_LLM.sub(_from_llm_sub, text)
    text = DOTTED.sub(_dotted_sub, text)
    text = PATH.sub(_path_sub, text)
    text = _bare(text, path, moving)
    for start, line in LINES.get(path, {}).items():
        text = "".join(line + "\n" if old.startswith(start) else old for old in text.splitlines(True))
    if path == "docs/architecture.md":
        for old, new in DIAGRAM.items():
            text = text.replace(old, new)
    return _rename(text, path)


def _pyproject(text: str) -> str:
    """Subpackages in the explicit package list; packaged data under its new package."""
    def packages(m: re.Match) -> str:
        names = re.findall(r'"([\w.]+)"', m.group(1))
        wanted = [f"llm.{p}" for p in SUBPACKAGES] + [f"llm.{p}" for p in PACKAGES.values()]
        out = []
        for n in names:
            out.append(n)
            if n == "llm":
                out += [w for w in wanted if w not in names and w not in out]
        return "packages = [" + ", ".join(f'"{n}"' for n in out) + "]"
    text = re.sub(r"^packages = \[([^\]]*)\]", packages, text, flags=re.M)
    return re.sub(r'^llm = \["idk_answers.txt"\]', '"llm.data" = ["idk_answers.txt"]', text, flags=re.M)


def text_files(repo: Path) -> list[str]:
    files = git(repo, "ls-files").split("\n")
    return sorted(f for f in files if f and f not in NOT_REWRITTEN and (repo / f).is_file()
                  and (f.endswith(TEXT_SUFFIXES) or f.startswith((".ci/", "configs/"))))


FILE_PARENTS = re.compile(r"(Path\(__file__\)(?:\.resolve\(\))?\.parents\[)(\d+)\]")


def _deeper(text: str) -> str:
    """A module moved one folder down: ``Path(__file__).parents[N]`` (the repository) is N + 1."""
    return FILE_PARENTS.sub(lambda m: f"{m.group(1)}{int(m.group(2)) + 1}]", text)


def rewrite(repo: Path, dry: bool, moving: set[str]) -> list[str]:
    down = [old for old in moving if "." in MOVES[old]]       # llm/plan.py -> llm/memory.py stays put
    deeper = {f"llm/{MOVES[old].replace('.', '/')}.py" for old in down} | {f"llm/{old}.py" for old in down}
    changed = []
    for rel in text_files(repo):
        path = repo / rel
        try:
            old = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        new = rewrite_text(old, rel, moving)
        if rel in deeper:     # its new path after the moves, its old one in a dry run
            new = _deeper(new)
        if new != old:
            changed.append(rel)
            if not dry:
                path.write_text(new, encoding="utf-8")
    return changed


# ---- 4. docs ----------------------------------------------------------------------------------------

def swap_docs(repo: Path, dry: bool) -> None:
    layout, arch = repo / LAYOUT_DOC, repo / "docs/architecture.md"
    if not layout.exists():
        return
    # ``[[if PATH|text]]``: text kept only where PATH exists after the move (another branch's file)
    section = re.sub(r"\[\[if ([^|\]]+)\|(.*?)\]\]", lambda m: m.group(2) if (repo / m.group(1)).exists() else "",
                     layout.read_text(encoding="utf-8"), flags=re.S).strip() + "\n\n"
    text = arch.read_text(encoding="utf-8")
    if LAYOUT_ANCHOR not in text:
        raise Stop(f"docs/architecture.md has no heading {LAYOUT_ANCHOR!r} to put the llm/ section before")
    print(f"docs/architecture.md: insert {LAYOUT_DOC} before {LAYOUT_ANCHOR!r}; git rm {LAYOUT_DOC}")
    if not dry:
        arch.write_text(text.replace(LAYOUT_ANCHOR, section + LAYOUT_ANCHOR, 1), encoding="utf-8")
        git(repo, "rm", "-q", LAYOUT_DOC)


# ---- 5. what is left --------------------------------------------------------------------------------

def leftovers(repo: Path) -> list[str]:
    """Lines still naming an old module by a name that no longer exists (a bare ``X.py``, or a
    dotted ``llm.X``) for a human to judge."""
    leaves = {new.split(".")[-1] for new in MOVES.values()}
    gone = [old for old in MOVES if old not in SUBPACKAGES and old not in leaves]
    bare = re.compile(rf"(?<![\w/.])(?:{'|'.join(map(re.escape, gone))})\.py\b")
    out = []
    for rel in text_files(repo):
        if rel == "pyproject.toml":
            continue
        for i, line in enumerate((repo / rel).read_text(encoding="utf-8").splitlines(), 1):
            if bare.search(line) or DOTTED.search(line):
                out.append(f"{rel}:{i}: {line.strip()[:120]}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/relayout.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
    p.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]), help="repository root")
    p.add_argument("--allow-dirty", action="store_true",
                   help="run although tracked files have uncommitted changes (they would mix with the move)")
    args = p.parse_args(argv)
    repo = Path(args.repo).resolve()
    try:
        if not (args.dry_run or args.allow_dirty) and git(repo, "status", "--porcelain", "--untracked-files=no"):
            raise Stop("tracked files have uncommitted changes: commit or stash them first, so that the "
                       "relayout is one reviewable diff (or pass --allow-dirty)")
        modules, packages, data = inventory(repo / "llm")
        move(repo, {**modules, **packages, **data}, args.dry_run)
        changed = rewrite(repo, args.dry_run, {old[:-3] for old in modules})
        for rel in changed:
            print(f"rewrite {rel}")
        swap_docs(repo, args.dry_run)
    except Stop as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.dry_run:
        left = leftovers(repo)
        if left:
            print(f"\n{len(left)} line(s) still name an old module (not rewritten; judge them):")
            print("\n".join("  " + line for line in left))
    moved = len(modules) + len(packages) + len(data)
    print(f"\n{'would move' if args.dry_run else 'moved'} {moved}, "
          f"{'would rewrite' if args.dry_run else 'rewrote'} {len(changed)} file(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
