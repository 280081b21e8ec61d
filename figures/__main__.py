"""Regenerate every paper figure: ``python -m figures [--quick] [--out DIR] [--force]``.

Discovers the figure modules (``figN_*`` and ``tableN_*`` in this package) and runs each one's
``main`` with the flags given here, in paper order. Exit code is non-zero if any figure failed.

``python -m figures --from-results DIR --out OUT`` draws every figure that reads a result folder
(the TOFU figures and the LM collapse-rate figure: modules with ``DRAWS_FROM_RESULTS``) from DIR,
e.g. ``results/tofu_smol``; a figure whose runs DIR does not hold (Fig. 8 needs forget50/forget90)
is reported as skipped, with the command that would produce them, and is not a failure.
"""
from __future__ import annotations

import importlib
import pkgutil
import time
from pathlib import Path

import figures
from figures.cli import EXIT_SKIPPED
from infra import cli


def figure_modules() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(figures.__path__)]
    return sorted((n for n in names if n.startswith(("fig", "table"))), key=_paper_order)


def _paper_order(name: str):
    digits = "".join(ch for ch in name.split("_")[0] if ch.isdigit())
    return (name.startswith("table"), int(digits or 0), name)


def draws_from_results(name: str) -> bool:
    return getattr(importlib.import_module(f"figures.{name}"), "DRAWS_FROM_RESULTS", False)


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("python -m figures", __doc__, json=False)
    parser.add_argument("--quick", action="store_true", help="CI-sized runs")
    parser.add_argument("--force", action="store_true", help="ignore cached results")
    parser.add_argument("--out", default=None, help="output directory (default: each module's)")
    parser.add_argument("--only", nargs="*", default=None, help="module names to run")
    parser.add_argument("--list", action="store_true", help="list the figure modules and exit")
    parser.add_argument("--from-results", default=None, metavar="DIR",
                        help="draw only the figures that read a result folder, from DIR "
                        "(e.g. results/tofu_smol); figures DIR has no runs for are skipped")
    args = parser.parse_args(argv)
    names = figure_modules() if not args.only else args.only
    if args.from_results is not None:
        if not Path(args.from_results).is_dir():
            return cli.fail("python -m figures", f"--from-results {args.from_results}: no such folder; "
                            "pass a pipeline output folder (python -m llm pipeline --out DIR)")
        names = [n for n in names if draws_from_results(n)]
    if args.list:
        print("\n".join(names))
        return 0
    flags = (["--quick"] if args.quick else []) + (["--force"] if args.force else []) + \
        (["--out", args.out] if args.out else []) + \
        (["--from-results", args.from_results, "--skip-missing"] if args.from_results else [])
    failed = []
    for name in names:
        start = time.perf_counter()
        try:
            code = importlib.import_module(f"figures.{name}").main(list(flags))
        except SystemExit as exc:  # argparse or a one-line user error inside the module
            code = exc.code
        if code == cli.EXIT_INTERRUPTED:  # Ctrl-C stops the whole run, not one figure
            return code
        status = "ok" if not code else "skipped" if code == EXIT_SKIPPED else f"FAILED ({code})"
        print(f"{name:<32} {status:<12} {time.perf_counter() - start:6.1f} s", flush=True)
        if code and code != EXIT_SKIPPED:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(cli.interruptible("python -m figures", main))
