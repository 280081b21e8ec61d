"""TOFU splits from a local directory (or the hub), validated, with any forget percentage.

    from llm.data import load_split
    forget = load_split("forget10", "/path/to/tofu")    # [{"question": ..., "answer": ...}, ...]

Layouts read (all found in real TOFU copies): JSON Lines (one object per line), a single JSON
array (one line or pretty-printed), and lines that each hold a JSON array of objects.

``forgetNN`` for any NN in 1..99 is the *last* k authors of ``full`` (20 QA pairs per author,
k = NN% of the authors) and ``retain(100-NN)`` the rest; forget01/05/10 and retain90/95/99 are read
from their files when present (they equal the derived splits; a test checks it). ``idontknow``
returns ``[{"answer": refusal}, ...]``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

__all__ = ["DataError", "TOFU_SPLITS", "QA_PER_AUTHOR", "resolve_data_dir", "load_split",
           "forget_percent", "split_fields"]

QA_PER_AUTHOR = 20
HUB_ID = "locuslab/TOFU"

TOFU_SPLITS = (
    "full", "forget01", "forget05", "forget10", "retain90", "retain95", "retain99",
    "forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed",
    "real_authors", "real_authors_perturbed", "world_facts", "world_facts_perturbed",
    "holdout01", "holdout05", "holdout10", "idontknow",
)

_PERTURBED_EVAL = ("paraphrased_answer", "perturbed_answer")  # forget/retain perturbed
_FIELDS = {
    "real_authors_perturbed": ("perturbed_answer",),
    "world_facts_perturbed": ("perturbed_answer",),
    "retain_perturbed": _PERTURBED_EVAL,
}
_SPLIT_RE = re.compile(r"^(forget|retain|holdout)(\d\d)(_perturbed)?$")


class DataError(ValueError):
    """A user-fixable data problem; the message is one line naming the file (and line) and the fix."""


def resolve_data_dir(data_dir=None) -> Path | None:
    """The argument, else $TOFU_DATA_DIR, else None (meaning: the hub, through ``datasets``)."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get("TOFU_DATA_DIR") or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(f"TOFU data directory {str(path)!r} does not exist; pass --data-dir DIR "
                        f"(or set TOFU_DATA_DIR) to a folder holding full.json, forget10.json, ...")
    return path


def forget_percent(name: str) -> int | None:
    """NN of ``forgetNN`` / ``retainNN``-style names as the *forget* percentage, else None."""
    m = _SPLIT_RE.match(name)
    if not m or m.group(3) or m.group(1) == "holdout":
        return None
    pct = int(m.group(2))
    return pct if m.group(1) == "forget" else 100 - pct


def split_fields(name: str) -> tuple[str, ...]:
    """Fields every record of split ``name`` must carry (strings, except list-valued perturbed_answer)."""
    if name == "idontknow":
        return ("answer",)
    if name in _FIELDS:
        return ("question", "answer") + _FIELDS[name]
    m = _SPLIT_RE.match(name)
    if m and m.group(3):
        return ("question", "answer") + _PERTURBED_EVAL
    return ("question", "answer")


def load_split(name: str, data_dir=None) -> list[dict]:
    """Records of TOFU split ``name`` (see module docstring), validated."""
    _check_name(name)
    root = resolve_data_dir(data_dir)
    pct = forget_percent(name)
    if root is None:
        return _from_hub(name, pct)
    path = _find_file(root, name)
    if path is not None:
        rows = _read_idk(path) if name == "idontknow" else _read_records(path)
        _validate(rows, path, split_fields(name))
        return rows
    if pct is not None:  # forgetNN / retainNN without a file: derive from full
        return _derive(load_split("full", root), pct, name, root)
    raise DataError(f"{root / (name + '.json')} not found; point --data-dir (or TOFU_DATA_DIR) at a "
                    f"complete TOFU copy (split {name!r} cannot be derived from full.json)")


# ---- helpers ------------------------------------------------------------------------------------

def _check_name(name: str) -> None:
    if name in TOFU_SPLITS or _SPLIT_RE.match(name):
        m = _SPLIT_RE.match(name)
        if m and not 1 <= int(m.group(2)) <= 99:
            raise DataError(f"split {name!r}: the percentage must be 01..99")
        return
    raise DataError(f"unknown TOFU split {name!r}; use one of {', '.join(TOFU_SPLITS)} "
                    f"or forgetNN/retainNN for any NN in 01..99")


def _find_file(root: Path, name: str) -> Path | None:
    for ext in (".json", ".jsonl"):
        if (root / (name + ext)).is_file():
            return root / (name + ext)
    return None


def _derive(full: list[dict], pct: int, name: str, root) -> list[dict]:
    if len(full) % QA_PER_AUTHOR:
        raise DataError(f"{root}/full.json has {len(full)} records, not a multiple of "
                        f"{QA_PER_AUTHOR} QA per author; use an unmodified TOFU full.json")
    authors = len(full) // QA_PER_AUTHOR
    k = round(authors * pct / 100)
    if k < 1 or k >= authors:
        raise DataError(f"split {name!r}: {pct}% of {authors} authors leaves an empty forget or "
                        f"retain set; pick another percentage")
    cut = len(full) - k * QA_PER_AUTHOR
    return full[cut:] if name.startswith("forget") else full[:cut]


def _read_records(path: Path) -> list[dict]:
    """Parse a JSON array file or JSON Lines (each line an object or an array of objects)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason}); use the original TOFU file") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty; use a complete TOFU copy")
    try:
        whole = json.loads(text)
        rows = whole if isinstance(whole, list) else [whole]
        return [_tag(r, path, None, i) for i, r in enumerate(rows)]
    except json.JSONDecodeError as whole_error:
        pretty_array = text.lstrip().startswith("[") and text.lstrip()[1:2] in ("\n", "\r", "")
        if pretty_array:  # a multi-line JSON array: the whole-file error has the right line
            raise DataError(f"{path}:{whole_error.lineno}: malformed JSON ({whole_error.msg}); "
                            f"fix or re-download the file") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON line ({e.msg}); fix or re-download "
                            f"the file") from None
        items = item if isinstance(item, list) else [item]
        rows += [_tag(r, path, lineno, len(rows) + j) for j, r in enumerate(items)]
    return rows


def _tag(record, path: Path, lineno: int | None, index: int):
    if not isinstance(record, dict):
        where = f"{path}:{lineno}" if lineno else f"{path} record {index}"
        raise DataError(f"{where}: expected a JSON object with question/answer, got "
                        f"{type(record).__name__}; fix the file")
    # Where the record came from, for validation messages; stripped again after validation.
    record["__where__"] = f"{path}:{lineno}" if lineno else f"{path} record {index}"
    return record


def _validate(rows: list[dict], path: Path, fields: tuple[str, ...]) -> None:
    if not rows:
        raise DataError(f"{path}: no records; use a complete TOFU copy")
    for r in rows:
        where = r.pop("__where__", str(path))
        for f in fields:
            value = r.get(f)
            ok = (isinstance(value, list) and value and all(isinstance(v, str) for v in value)
                  if f == "perturbed_answer" else isinstance(value, str) and value.strip())
            if not ok:
                got = "missing" if f not in r else f"{type(value).__name__} {str(value)[:30]!r}"
                raise DataError(f"{where}: field {f!r} is {got}, expected "
                                f"{'a list of strings' if f == 'perturbed_answer' else 'a non-empty string'}; "
                                f"fix the record or use an unmodified TOFU file")


def _read_idk(path: Path) -> list[dict]:
    """One refusal per line: plain text, or a JSON string / object with 'answer' or 'text'."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line[0] in "{\"":
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON line ({e.msg}); fix the file") from None
            line = item if isinstance(item, str) else item.get("answer", item.get("text")) \
                if isinstance(item, dict) else None
        rows.append({"answer": line, "__where__": f"{path}:{lineno}"})
    return rows


def _from_hub(name: str, pct: int | None) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise DataError("no TOFU data directory given: pass --data-dir DIR or set TOFU_DATA_DIR to a "
                        "local copy of locuslab/TOFU (or pip install datasets to download it)") from None
    if name == "idontknow":
        raise DataError("idontknow is not on the hub; pass --data-dir with idontknow.jsonl "
                        "(from github.com/locuslab/tofu data/)")
    official = name in TOFU_SPLITS
    if not official and pct is None:
        raise DataError(f"split {name!r} is not on the hub and cannot be derived from full; pass "
                        f"--data-dir DIR holding {name}.json")
    try:
        rows = [dict(r) for r in datasets.load_dataset(HUB_ID, name if official else "full",
                                                       split="train")]
    except Exception as e:  # offline, unknown config, ...: one line, with the fix
        raise DataError(f"could not load {HUB_ID}/{name} from the hub ({type(e).__name__}); pass "
                        f"--data-dir DIR or set TOFU_DATA_DIR to a local copy") from None
    for i, r in enumerate(rows):
        r["__where__"] = f"hub {HUB_ID}/{name} record {i}"
    _validate(rows, Path(f"hub:{HUB_ID}/{name}"), split_fields(name if official else "full"))
    return rows if official else _derive(rows, pct, name, f"hub:{HUB_ID}")
