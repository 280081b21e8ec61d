"""Run every machine-checked derivation: ``python -m theory [--json] [--markdown PATH] [--only ID|ITEM ...]``.

Prints a table (id, verified, statement, how) of the checks of ``theory.derivations``, or with
``--json`` one document ``{"checks": [{"id", "item", "paper", "statement", "verified", "method"}, ...]}``.
``--markdown PATH`` also writes (atomically) a document of all derivations with LaTeX formulas.
Exit code: 0 when every selected check is verified, 1 when one fails, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import json
import shutil
import textwrap
import time

from infra.cli import fail, interruptible, parser


PROG = "python -m theory"


def _parser() -> argparse.ArgumentParser:
    p = parser(PROG, __doc__)
    p.add_argument("--markdown", metavar="PATH", default=None,
                   help="also write the derivations with LaTeX formulas to this markdown file")
    p.add_argument("--only", nargs="+", metavar="ID", default=None,
                   help="run only these check ids or item numbers (1-8)")
    p.add_argument("--list", action="store_true", help="list the check ids and exit")
    return p


def format_table(results, width: int | None = None) -> str:
    width = width or max(80, min(140, shutil.get_terminal_size((110, 20)).columns))
    id_w = max(len(r.id) for r in results) + 2
    indent = " " * (id_w + 10)
    lines = [f"{'id':<{id_w}}{'verified':<10}statement / how", "-" * width]
    for r in results:
        status = "yes" if r.verified else "NO"
        statement = textwrap.wrap(r.statement, width - len(indent)) or [""]
        lines.append(f"{r.id:<{id_w}}{status:<10}{statement[0]}")
        lines += [indent + s for s in statement[1:]]
        lines += textwrap.wrap("how: " + r.method, width, initial_indent=indent, subsequent_indent=indent + "     ")
        if r.error:
            lines.append(indent + "error: " + r.error)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from theory import derivations as dv  # imported here so that --help stays fast

    try:
        checks = dv.select(args.only)
    except KeyError as exc:
        return fail(PROG, exc.args[0])
    if args.list:
        print("\n".join(f"{c.id:<32} {c.paper}" for c in checks))
        return 0
    start = time.perf_counter()
    results = [dv.run_check(c) for c in checks]
    elapsed = time.perf_counter() - start
    failed = [r.id for r in results if not r.verified]
    if args.markdown:
        from infra.files import write_text
        from theory.derivations.document import render_markdown
        try:
            write_text(args.markdown, render_markdown(results))
        except OSError as exc:
            return fail(PROG, f"cannot write {args.markdown}: {exc.strerror or exc}; "
                        "pass a writable --markdown PATH")
    if args.json:
        print(json.dumps({"checks": [r.as_dict() for r in results]}, indent=2))
    else:
        print(format_table(results))
        print(f"\n{len(results) - len(failed)}/{len(results)} checks verified in {elapsed:.1f} s"
              + (f"; FAILED: {', '.join(failed)}" if failed else ""))
        if args.markdown:
            print(f"wrote {args.markdown}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(interruptible(PROG, main))
