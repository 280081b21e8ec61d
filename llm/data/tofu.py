"""TOFU splits from a local directory or the Hugging Face cache, validated, any forget percentage.

    from llm.data.tofu import load_split
    forget = load_split("forget10", "/path/to/tofu")    # [{"question": ..., "answer": ...}, ...]
    forget = load_split("forget10")                     # $TOFU_DATA_DIR, else the hub dataset

Where the data comes from, first match wins: the ``data_dir`` argument (``--data-dir``), then
``$TOFU_DATA_DIR``, then the hub dataset ``locuslab/TOFU`` through ``huggingface_hub`` (one
``hf_hub_download`` per split file, e.g. ``forget10.json`` at the repository root as the hub
stores it), which reads the local Hugging Face cache when ``HF_HUB_OFFLINE=1``. So after
``hf download locuslab/TOFU --repo-type dataset`` every command runs offline with no flag.

Layouts read (all found in real TOFU copies): JSON Lines (one object per line), a single JSON
array (one line or pretty-printed), and lines that each hold a JSON array of objects.

``forgetNN`` for any NN in 1..99 is the *last* k authors of ``full`` (20 QA pairs per author,
k = NN% of the authors) and ``retain(100-NN)`` the rest; forget01/05/10 and retain90/95/99 are read
from their files when present (they equal the derived splits; a test checks it). ``idontknow``
returns ``[{"answer": refusal}, ...]``: ``idontknow.jsonl`` of the data folder when it has one,
else the refusal list shipped with this package (``llm/data/idk_answers.txt``; the hub has none);
``load_idk(path)`` reads a file of your own (``--idk-file``).
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

__all__ = ["DataError", "TOFU_SPLITS", "QA_PER_AUTHOR", "HUB_ID", "DOWNLOAD_COMMAND", "resolve_data_dir",
           "load_split", "load_idk", "hub_data_dir", "forget_percent", "split_fields"]

QA_PER_AUTHOR = 20
HUB_ID = "locuslab/TOFU"
DOWNLOAD_COMMAND = f"hf download {HUB_ID} --repo-type dataset"
PACKAGED_IDK = Path(__file__).with_name("idk_answers.txt")

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
    """The argument, else $TOFU_DATA_DIR, else None (meaning: the hub dataset, via its cache)."""
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
    if name == "idontknow":
        return load_idk(None, data_dir)
    root = resolve_data_dir(data_dir)
    pct = forget_percent(name)
    if root is None:
        return _from_hub(name, pct)
    path = _find_file(root, name)
    if path is not None:
        rows = _read_records(path)
        _validate(rows, path, split_fields(name))
        return rows
    if pct is not None:  # forgetNN / retainNN without a file: derive from full
        return _derive(load_split("full", root), pct, name, root)
    raise DataError(f"{root / (name + '.json')} not found; point --data-dir (or TOFU_DATA_DIR) at a "
                    f"complete TOFU copy (split {name!r} cannot be derived from full.json)")


def load_idk(idk_file=None, data_dir=None) -> list[dict]:
    """Refusal answers ``[{"answer": ...}]`` for IDK-style objectives: ``idk_file`` if given, else
    ``idontknow.jsonl`` in the data folder (``data_dir`` or $TOFU_DATA_DIR), else the packaged list."""
    if idk_file not in (None, ""):
        path = Path(idk_file).expanduser()
        if not path.is_file():
            raise DataError(f"--idk-file {str(path)!r} not found; pass a file with one refusal answer "
                            f"per line (or omit it to use the list shipped with llm)")
    else:
        root = resolve_data_dir(data_dir)
        path = (root and _find_file(root, "idontknow")) or PACKAGED_IDK
    rows = _read_idk(path)
    _validate(rows, path, split_fields("idontknow"))
    return rows


def hub_data_dir() -> Path:
    """The cached snapshot folder of the hub dataset, after fetching every split file into it
    (for code that needs a folder, like the pipeline); DataError if ``full.json`` is unavailable."""
    root = _hub_file("full").parent
    for name in TOFU_SPLITS:
        if name not in ("full", "idontknow"):
            try:
                _hub_file(name)
            except DataError:
                pass  # optional files (holdout*) may be missing from older snapshots
    return root


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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}); pass a text file with one refusal "
                        f"answer per line") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
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
    official = name in TOFU_SPLITS
    if not official and pct is None:
        raise DataError(f"split {name!r} is not on the hub and cannot be derived from full; pass "
                        f"--data-dir DIR holding {name}.json")
    if official:
        try:
            path = _hub_file(name)
        except DataError:
            if pct is None:
                raise
            official = False  # forgetNN/retainNN not fetched: derive it from full, as for a folder
    stem = name if official else "full"
    path = path if official else _hub_file(stem)
    rows = _read_records(path)
    _validate(rows, path, split_fields(stem))
    return rows if official else _derive(rows, pct, name, path.parent)


def _hub_file(stem: str) -> Path:
    """Local path of ``<stem>.json`` of the hub dataset: the cached copy when there is one (no
    network, whatever HF_HUB_OFFLINE says), else a download; after one failed download the hub
    is not asked again in this process (each attempt costs the hub client's retries)."""
    global _HUB_UNREACHABLE
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:  # comes with transformers; without it only local folders work
        raise DataError("TOFU data not found: pass --data-dir DIR or set TOFU_DATA_DIR to a TOFU "
                        "folder (huggingface_hub, needed to read the hub cache, is not installed)") from None
    cached = try_to_load_from_cache(HUB_ID, f"{stem}.json", repo_type="dataset")
    if isinstance(cached, str):
        return Path(cached)
    error = "not in the Hugging Face cache"
    if not _HUB_UNREACHABLE:
        hub_log = logging.getLogger("huggingface_hub")
        level = hub_log.level
        hub_log.setLevel(logging.ERROR)  # its retry warnings would bury our one-line error
        try:
            return Path(hf_hub_download(HUB_ID, f"{stem}.json", repo_type="dataset"))
        except Exception as e:  # offline, unreachable hub, missing file: one line, with the fix
            _HUB_UNREACHABLE = True
            error = type(e).__name__
        finally:
            hub_log.setLevel(level)
    raise DataError(f"TOFU split {stem!r} not found ({HUB_ID}/{stem}.json: {error}): pass --data-dir "
                    f"DIR or set TOFU_DATA_DIR to a TOFU folder, or download it once with "
                    f"`{DOWNLOAD_COMMAND}`")


_HUB_UNREACHABLE = False
