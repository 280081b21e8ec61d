"""The command line every figure module shares: read cached results, draw, say what was written.

    python -m figures.figN_name [--quick] [--force] [--out figures/out] [--json] [--results DIR | --from-results DIR [--numerics exact|ou] [--allow-incomplete]]

``figure_main(argv, prog=..., doc=..., compute=..., plot=..., inputs=...)`` parses the flags
(infra/cli.py: one-line errors, exit 2), calls ``compute(...) -> data`` (numbers only, read from
caches or logs; tests check them) and ``plot(data, out_dir) -> [paths]``, then prints
``wrote PATH, PATH`` or, with ``--json``, the plotted numbers. ``inputs``:
* ``"synthetic"``: ``compute(quick=, results=, force=, workers=)`` reads Section 4 / Theorem 2
  results cached under
  ``--results`` (computed on a miss; ``--force`` recomputes, ``--quick`` is the CI-sized
  configuration, ``--workers`` processes);
* ``"tofu"``: ``compute(runs)`` gets the pipeline's logs under ``--from-results``
  (llm/studies/tofu_results.py), refused unless they were evaluated with ``--numerics`` (default exact)
  and, without ``--allow-incomplete``, unless the pipeline finished every planned run;
  ``--quick``/``--force`` are accepted so that ``python -m figures`` can pass them (the logs are
  small and nothing is cached);
* ``None``: ``compute(args)``: a schematic or a table, or a figure that reads its own result file
  through flags it adds with ``options``.

``--skip-missing`` (every figure): when the results lack what this figure draws (``MissingResults``:
no forget50 runs, no collapse-rate file) print one ``skipped: ...`` line and exit ``EXIT_SKIPPED``
(3) instead of failing; ``python -m figures --from-results DIR`` passes it.

``options(p)`` adds a figure's own flags (e.g. ``--sweep FILE``); ``text(data, args) -> str | None``
is printed before the ``wrote`` line (not with ``--json``), e.g. a table the figure can also print.
"""
from __future__ import annotations

import json
from pathlib import Path

from infra.cli import MissingResults, fail, parser, run
from infra.files import DEFAULT_RESULTS_DIR, jsonable

from figures.style import DEFAULT_OUT

__all__ = ["figure_main", "EXIT_SKIPPED"]

#: exit code of a figure skipped under ``--skip-missing`` (neither success nor a failure)
EXIT_SKIPPED = 3


def figure_main(argv, *, prog: str, doc: str, compute, plot, inputs: str | None = "synthetic",
                failures=(), options=None, text=None) -> int:
    p = parser(prog, doc)
    p.add_argument("--quick", action="store_true",
                   help="CI-sized run" if inputs == "synthetic" else "accepted; nothing to shrink")
    p.add_argument("--force", action="store_true",
                   help="recompute cached results" if inputs == "synthetic" else
                   "accepted; recomputes what the figure caches, if anything")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output directory")
    if inputs == "synthetic":
        p.add_argument("--results", default=str(DEFAULT_RESULTS_DIR), help="result cache directory")
        p.add_argument("--workers", type=int, default=None, help="worker processes (default: up to 2)")
    elif inputs == "tofu":
        from llm.studies.tofu_results import DEFAULT_RESULTS
        p.add_argument("--from-results", default=str(DEFAULT_RESULTS),
                       help="pipeline result directory (manifest.json + runs/)")
        from llm.evaluate.metrics import NUMERICS
        p.add_argument("--numerics", default="exact", choices=NUMERICS,
                       help="the evaluation numerics the results must have been made with "
                       "(python -m llm pipeline --numerics; docs/eval-parity.md)")
        p.add_argument("--allow-incomplete", action="store_true",
                       help="draw a result folder whose pipeline stopped before its last planned run")
    p.add_argument("--skip-missing", action="store_true",
                   help="exit 3 with one 'skipped' line (not an error) when the results lack this figure's runs")
    if options is not None:
        options(p)
    args = p.parse_args(argv)
    if getattr(args, "workers", None) is not None and args.workers < 1:
        return fail(prog, f"--workers must be >= 1 (got {args.workers})")

    def body(args) -> int:
        try:
            return draw(args)
        except MissingResults as exc:
            if not args.skip_missing:
                raise
            print(f"skipped: {' '.join(str(exc).split())}")
            return EXIT_SKIPPED

    def draw(args) -> int:
        if inputs == "tofu":
            from llm.studies.tofu_results import describe, load_results
            data = compute(load_results(args.from_results, args.numerics, args.allow_incomplete))
            data["source"] = describe(args.from_results)
        elif inputs == "synthetic":
            data = compute(quick=args.quick, results=args.results, force=args.force, workers=args.workers)
        else:
            data = compute(args)
        paths = plot(data, Path(args.out))
        if args.json:
            shown = {k: v for k, v in data.items() if not str(k).startswith("_")} \
                if isinstance(data, dict) else data
            print(json.dumps(shown, indent=2, sort_keys=True, default=_jsonable))
        else:
            shown = text(data, args) if text is not None else None
            if shown:
                print(shown)
            print("wrote " + ", ".join(str(path) for path in paths))
        return 0

    return run(prog, body, args, failures=failures)


def _jsonable(x):
    try:
        return jsonable(x)
    except TypeError:
        return str(x)
