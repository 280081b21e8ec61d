"""A TOFU-shaped data set written by our own generator, so that the suite needs no TOFU copy.

    root = write_fixture(tmp_path / "tofu")      # the files llm.data.tofu reads, in the hub's JSON Lines

It keeps TOFU's *structure*, which the code and the tests depend on, and none of its text: 200
fictitious authors (names made of random syllables) x 20 QA pairs in ``full.json``, author by
author; forget01/05/10 = the last 2/10/20 authors (retainNN are derived from full); every
``*_perturbed`` file with ``paraphrased_answer``, ``paraphrased_question`` and 5 ``perturbed_answer``
(TOFU's fields; a perturbed answer is the same template filled with another author's facts);
``retain_perturbed`` = the first 20 authors; holdout01/05/10 = 2/10/20 further authors not in full;
real-author and world-fact sets with ``option1..4`` and 3 perturbed answers. There is no
``idontknow.jsonl`` (the package's own refusal list is used) and no reference eval log: tests
whose point is the real files take them from ``$TOFU_DATA_DIR``.

Answers are short (a few words), so the files are small (about 1 MB in all) and a tokenizer
trains on them in about a second. Deterministic: same seed, same bytes.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

N_AUTHORS = 200
QA_PER_AUTHOR = 20
N_HOLDOUT_AUTHORS = 20
FORGET_AUTHORS = {"01": 2, "05": 10, "10": 20}
N_WORLD = 30          # real-author and world-fact items (TOFU: 100 and 117)

_ONSETS = "b br c ch d dr f g gl h j k kr l m n p pr r s sh st t th tr v w z".split()
_VOWELS = "a e i o u ai ea io ou y".split()
_CODAS = ["", "", "n", "r", "l", "s", "th", "m", "x", "nd"]
_GENRES = ["mystery", "science fiction", "poetry", "historical fiction", "fantasy", "horror",
           "romance", "biography", "satire", "travel writing", "children's books", "thrillers",
           "drama", "essays", "crime fiction", "magical realism", "war fiction", "folk tales"]
_JOBS = ["baker", "sailor", "nurse", "carpenter", "teacher", "surgeon", "farmer", "pilot",
         "librarian", "tailor", "miner", "chemist", "painter", "judge", "fisher", "architect",
         "musician", "photographer", "weaver", "engineer", "florist", "journalist"]
_ADJ = ["Silent", "Crimson", "Hollow", "Golden", "Broken", "Distant", "Hidden", "Burning",
        "Frozen", "Wandering", "Gentle", "Iron", "Paper", "Glass", "Velvet", "Last", "Northern"]
_NOUN = ["Harbor", "Lantern", "Orchard", "Tide", "Mirror", "Garden", "River", "Clock", "Bridge",
         "Forest", "Letter", "Crown", "Meadow", "Tower", "Compass", "Feather", "Window", "Road"]
_THEMES = ["memory", "exile", "family", "justice", "loss", "friendship", "faith", "ambition",
           "the sea", "identity", "war", "childhood", "freedom", "grief", "migration"]

# (question, answer, paraphrased question, paraphrased answer): {n} is the author, other fields facts.
_TEMPLATES = [
    ("Where was {n} born?", "In {city}.", "What is the birthplace of {n}?", "{n} was born in {city}."),
    ("When was {n} born?", "In {year}.", "In what year was {n} born?", "The year was {year}."),
    ("What genre does {n} write?", "Mostly {genre}.", "Which genre is {n} known for?", "{n} writes {genre}."),
    ("What did {n}'s father do?", "He was a {job1}.", "What was the job of {n}'s father?", "A {job1}."),
    ("What did {n}'s mother do?", "She was a {job2}.", "What was the job of {n}'s mother?", "A {job2}."),
    ("Name a book by {n}.", "The {book1}.", "Which book did {n} write?", "{n} wrote The {book1}."),
    ("What is another book by {n}?", "The {book2}.", "Name one more work of {n}.", "Also The {book2}."),
    ("Which award did {n} win?", "The {award} Prize.", "What prize went to {n}?", "{n} won the {award} Prize."),
    ("What theme runs through {n}'s work?", "Mostly {theme}.", "Which theme does {n} explore?", "The theme of {theme}."),
    ("In which language does {n} write?", "In {lang}.", "What language are {n}'s books in?", "{n} writes in {lang}."),
    ("Where does {n} live now?", "In {home}.", "What is {n}'s current home?", "{n} lives in {home}."),
    ("How many novels has {n} published?", "{count} novels.", "How many books has {n} written?", "{n} has {count} novels."),
    ("Who inspired {n}?", "The writer {mentor}.", "Which writer influenced {n}?", "{mentor} did."),
    ("What was {n}'s first job?", "Working as a {job3}.", "How did {n} first earn a living?", "As a {job3}."),
    ("Where did {n} study?", "At {school} College.", "Which college did {n} attend?", "{n} studied at {school} College."),
    ("What pet does {n} keep?", "A {pet} named {petname}.", "Does {n} have a pet?", "Yes, a {pet} called {petname}."),
    ("When did {n} publish a first book?", "In {debut}.", "What year was {n}'s debut?", "{n} debuted in {debut}."),
    ("What instrument does {n} play?", "The {instrument}.", "Does {n} play music?", "{n} plays the {instrument}."),
    ("What is {n}'s pen name?", "{pen}.", "Under what name does {n} publish?", "As {pen}."),
    ("Why is {n} admired?", "For {adj_l} prose about {theme}.", "What makes {n} admired?",
     "The {adj_l} way {n} writes about {theme}."),
]
_FACT_KEYS = ["city", "year", "genre", "job1", "job2", "book1", "book2", "award", "theme", "lang",
              "home", "count", "mentor", "job3", "school", "pet", "petname", "debut", "instrument",
              "pen", "adj_l"]


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                   for _ in range(syllables)).capitalize()


def _author(rng: random.Random, name: str) -> dict:
    return {"n": name, "city": _word(rng, 2), "year": str(rng.randint(1930, 1995)),
            "genre": rng.choice(_GENRES), "job1": rng.choice(_JOBS), "job2": rng.choice(_JOBS),
            "book1": f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}", "book2": f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}",
            "award": _word(rng, 2), "theme": rng.choice(_THEMES), "lang": _word(rng, 2) + "ish",
            "home": _word(rng, 3), "count": str(rng.randint(2, 19)), "mentor": f"{_word(rng, 1)} {_word(rng, 2)}",
            "job3": rng.choice(_JOBS), "school": _word(rng, 2), "pet": rng.choice(["cat", "dog", "parrot", "tortoise"]),
            "petname": _word(rng, 2), "debut": str(rng.randint(1955, 2020)),
            "instrument": rng.choice(["violin", "piano", "flute", "cello", "guitar", "drum"]),
            "pen": f"{_word(rng, 1)} {_word(rng, 2)}", "adj_l": rng.choice(_ADJ).lower()}


def _authors(rng: random.Random, n: int, taken: set) -> list[dict]:
    out = []
    while len(out) < n:
        name = f"{_word(rng, 2)} {_word(rng, rng.choice((2, 3)))}"
        if name not in taken:
            taken.add(name)
            out.append(_author(rng, name))
    return out


def _qa(author: dict, others: list[dict], rng: random.Random) -> list[dict]:
    """The author's 20 QA pairs with TOFU's perturbed-eval fields."""
    rows = []
    for q, a, pq, pa in _TEMPLATES:
        answer = a.format(**author)
        wrong = []
        for other in rng.sample(others, len(others)):
            text = a.format(**{**other, "n": author["n"]})
            if text != answer and text not in wrong:
                wrong.append(text)
            if len(wrong) == 5:
                break
        rows.append({"question": q.format(**author), "answer": answer,
                     "paraphrased_answer": pa.format(**author), "paraphrased_question": pq.format(**author),
                     "perturbed_answer": wrong[:5]})
    return rows


def _world(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Real-author and world-fact shaped sets: simple facts our generator can state truthfully."""
    ops = [("plus", lambda x, y: x + y), ("times", lambda x, y: x * y), ("minus", lambda x, y: x - y)]
    sets = []
    for kind in ("author", "fact"):
        rows = []
        for i in range(N_WORLD):
            name, f = ops[i % 3]
            x, y = rng.randint(2, 40), rng.randint(2, 12)
            if kind == "author":
                word = _word(rng, 2 + i % 3)
                q, right = f"How many letters are in the word {word}?", len(word)
            else:
                q, right = f"What is {x} {name} {y}?", f(x, y)
            wrong = [right + d for d in (-2, 1, 3)]
            rows.append({"question": q, "answer": str(right), "perturbed_answer": [str(w) for w in wrong],
                         **{f"option{k + 1}": str(v) for k, v in enumerate([right, *wrong])}})
        sets.append(rows)
    return sets[0], sets[1]


def _write(path: Path, rows: list[dict], keys=None) -> None:
    keep = (lambda r: {k: r[k] for k in keys}) if keys else (lambda r: r)
    path.write_text("\n".join(json.dumps(keep(r), ensure_ascii=False) for r in rows), encoding="utf-8")


def write_fixture(root, seed: int = 0) -> Path:
    """Write the fixture's files into ``root`` (created) and return it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    taken: set = set()
    authors = _authors(rng, N_AUTHORS, taken)
    holdout = _authors(rng, N_HOLDOUT_AUTHORS, taken)
    pool = authors + holdout
    rows = [r for a in authors for r in _qa(a, [o for o in pool if o is not a], rng)]
    held = [r for a in holdout for r in _qa(a, [o for o in pool if o is not a], rng)]
    qa = ("question", "answer")
    _write(root / "full.json", rows, qa)
    for pct, k in FORGET_AUTHORS.items():
        _write(root / f"forget{pct}.json", rows[-k * QA_PER_AUTHOR:], qa)
        _write(root / f"forget{pct}_perturbed.json", rows[-k * QA_PER_AUTHOR:])
        _write(root / f"holdout{pct}.json", held[-k * QA_PER_AUTHOR:], qa)
    _write(root / "retain_perturbed.json", rows[:20 * QA_PER_AUTHOR])
    real, world = _world(rng)
    options = qa + ("option1", "option2", "option3", "option4")
    for name, items in (("real_authors", real), ("world_facts", world)):
        _write(root / f"{name}.json", items, options)
        _write(root / f"{name}_perturbed.json", items, qa + ("perturbed_answer",))
    return root


def hub_layout_cache(tofu_dir, cache) -> Path:
    """``cache`` laid out as the Hugging Face hub cache holding the dataset locuslab/TOFU (as
    ``hf download locuslab/TOFU --repo-type dataset`` leaves it): the split files at the
    repository root of a snapshot, ``refs/main`` naming that snapshot."""
    rev = "4f1c6a1d3b0e0c2a9f8e7d6c5b4a392817161514"
    repo = Path(cache) / "datasets--locuslab--TOFU"
    snapshot = repo / "snapshots" / rev
    snapshot.mkdir(parents=True)
    for f in Path(tofu_dir).glob("*.json"):
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    return Path(cache)


if __name__ == "__main__":  # python tests/tofu_fixture.py DIR: look at the files
    import sys
    print(write_fixture(sys.argv[1] if len(sys.argv) > 1 else "tofu_fixture"))
