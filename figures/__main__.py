"""Regenerate every paper figure: ``python -m figures [--quick] [--out DIR] [--force]``.

Discovers the figure modules (``figN_*`` and ``tableN_*`` in this package) and runs each one's
``main`` with the flags given here, in paper order. Exit code is non-zero if any figure failed.
"""
from __future__ import annotations

import importlib
import pkgutil
import time

import figures
from infra import cli


def figure_modules() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(figures.__path__)]
    return sorted((n for n in names if n.startswith(("fig", "table"))), key=_paper_order)


def _paper_order(name: str):
    digits = "".join(ch for ch in name.split("_")[0] if ch.isdigit())
    return (name.startswith("table"), int(digits or 0), name)


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("python -m figures", __doc__, json=False)
    parser.add_argument("--quick", action="store_true", help="CI-sized runs")
    parser.add_argument("--force", action="store_true", help="ignore cached results")
    parser.add_argument("--out", default=None, help="output directory (default: each module's)")
    parser.add_argument("--only", nargs="*", default=None, help="module names to run")
    parser.add_argument("--list", action="store_true", help="list the figure modules and exit")
    args = parser.parse_args(argv)
    names = figure_modules() if not args.only else args.only
    if args.list:
        print("\n".join(names))
        return 0
    flags = (["--quick"] if args.quick else []) + (["--force"] if args.force else []) + \
        (["--out", args.out] if args.out else [])
    failed = []
    for name in names:
        start = time.perf_counter()
        try:
            code = importlib.import_module(f"figures.{name}").main(list(flags))
        except SystemExit as exc:  # argparse or a one-line user error inside the module
            code = exc.code
        if code == cli.EXIT_INTERRUPTED:  # Ctrl-C stops the whole run, not one figure
            return code
        status = "ok" if not code else f"FAILED ({code})"
        print(f"{name:<32} {status:<12} {time.perf_counter() - start:6.1f} s", flush=True)
        if code:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(cli.interruptible("python -m figures", main))
