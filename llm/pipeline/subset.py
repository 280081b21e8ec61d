"""A consistent TOFU subset for small-scale pipeline runs (the ``cpu`` preset).

    write_subset(src, dst, qa_per_author=2, tasks=["forget01", "forget10"], retain_splits=["retain90"])

Keeps every one of the 200 fictitious authors but only the first ``qa_per_author`` of their 20 QA
pairs, so that forgetNN is still the last NN% of the *authors* (forget01 = 2 authors) and every
forget/retain/perturbed file stays aligned item by item with ``full``: a model fine-tuned on the
subset's ``full`` has seen exactly the subset's forget items that the evaluation asks about.
forgetNN / retainNN files are written for each task (``llm.data.tofu`` reads files before deriving,
and its derivation assumes 20 QA per author). The real-author and world-fact sets, which no model
trains on, are cut to their first ``eval_items`` items. Written under the pipeline's work dir,
never into the repository (TOFU is not redistributed).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from infra.files import write_text
from llm.data.tofu import QA_PER_AUTHOR, load_split

#: Perturbed eval files of the official forget splits (forgetNN for other NN have none: the paper
#: evaluates forget20/30/50/90 on forget10_perturbed as a proxy).
PERTURBED_TASKS = ("forget01", "forget05", "forget10")
COPIED = ("idontknow.jsonl",)


def source_files() -> list[str]:
    """Source files a subset (or a run on the full data) depends on, for content hashing."""
    names = ["full", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed"]
    names += [f"{t}_perturbed" for t in PERTURBED_TASKS]
    return [f"{n}.json" for n in names] + list(COPIED)


def content_hash(src) -> str:
    """sha256 over the bytes of the TOFU files the pipeline reads (missing files hash as absent)."""
    h = hashlib.sha256()
    for name in source_files():
        path = Path(src) / name
        h.update(name.encode())
        h.update(path.read_bytes() if path.exists() else b"<absent>")
    return h.hexdigest()[:16]


def _keep(rows, qa_per_author):
    """Rows whose index within their author's block of 20 is < qa_per_author."""
    return [r for i, r in enumerate(rows) if i % QA_PER_AUTHOR < qa_per_author]


def write_subset(src, dst, qa_per_author: int, tasks, retain_splits=(), eval_items: int | None = None) -> dict:
    """Write the subset to ``dst`` (forgetNN/retainNN for ``tasks``, plus ``retain_splits``);
    return its item counts per file."""
    src, dst = Path(src), Path(dst)
    if not 1 <= qa_per_author <= QA_PER_AUTHOR:
        raise ValueError(f"qa_per_author must be in 1..{QA_PER_AUTHOR}, got {qa_per_author}")
    full = load_split("full", src)
    sub_full = _keep(full, qa_per_author)
    files = {"full": sub_full}
    authors = len(full) // QA_PER_AUTHOR
    for split in list(tasks) + [f"forget{100 - int(r[len('retain'):]):02d}" for r in retain_splits]:
        pct = int(split[len("forget"):])
        k = round(authors * pct / 100)
        cut = (authors - k) * qa_per_author
        files[split] = sub_full[cut:]
        files[f"retain{100 - pct:02d}"] = sub_full[:cut]
    for task in PERTURBED_TASKS:
        files[f"{task}_perturbed"] = _keep(load_split(f"{task}_perturbed", src), qa_per_author)
    for task in tasks:   # the paper's proxy: forget10's perturbed set (its authors are in the task)
        if task not in PERTURBED_TASKS:
            if int(task[len("forget"):]) < 10:
                raise ValueError(f"{task} has no perturbed eval set and is smaller than forget10; "
                                 f"use forget01, forget05, forget10 or forget20 and above")
            files[f"{task}_perturbed"] = files["forget10_perturbed"]
    files["retain_perturbed"] = _keep(load_split("retain_perturbed", src), qa_per_author)
    for name in ("real_authors_perturbed", "world_facts_perturbed"):
        files[name] = load_split(name, src)[:eval_items]
    for name, rows in files.items():
        write_text(dst / f"{name}.json", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    for name in COPIED:
        if (src / name).exists():
            write_text(dst / name, (src / name).read_text(encoding="utf-8"))
    return {name: len(rows) for name, rows in files.items()}


def write_finetune_dir(eval_dir, dst, world_items: int, splits) -> dict:
    """The fine-tuning copy of ``eval_dir``: each of ``splits`` (full, retainNN) preceded by the
    first ``world_items`` real-author and world-fact QA pairs, every other file unchanged.

    A from-scratch model knows nothing of the real world, so its Real Authors / World Facts scores
    (three of the nine Model Utility components) would be 0 and Model Utility, a harmonic mean, 0
    from the start. Learning those QA pairs alongside TOFU stands in for a pretrained model's world
    knowledge; target and retain models learn the same pairs, and unlearning never sees them.
    """
    eval_dir, dst = Path(eval_dir), Path(dst)
    world = []
    for name in ("real_authors_perturbed", "world_facts_perturbed"):
        world += [{"question": r["question"], "answer": r["answer"]}
                  for r in load_split(name, eval_dir)[:world_items]]
    counts = {}
    for path in sorted(eval_dir.iterdir()):
        stem = path.name.split(".")[0]
        if stem in splits:
            rows = world + load_split(stem, eval_dir)
            write_text(dst / path.name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            counts[stem] = len(rows)
        else:
            write_text(dst / path.name, path.read_text(encoding="utf-8"))
    return counts
