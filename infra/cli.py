"""The one command-line helper: argparse with one-line errors, ``--json``, and exit codes.

Every ``python -m ...`` entry point builds its parser with ``parser`` and runs its body with
``run``: a bad flag, a bad value or a missing file ends in ONE line on stderr naming the fix and
exit code 2 (``EXIT_USAGE``); a check that fails (a paper claim, a derivation, a fit) exits 1
(``EXIT_FAILED``); success 0.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "Parser", "parser", "fail", "run"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line and exit 2."""

    def error(self, message):  # argparse would print the whole usage block too
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, and the module docstring's layout kept as written."""


def parser(prog: str, doc: str | None, json: bool = True) -> Parser:
    """A ``Parser`` with the module docstring as description and, by default, ``--json``."""
    p = Parser(prog=prog, description=doc, formatter_class=_Formatter)
    if json:
        p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    return p


def fail(prog: str, message, code: int = EXIT_USAGE, what: str = "error") -> int:
    """Print ``prog: error: message`` as one line on stderr; return ``code``."""
    text = " ".join(str(message).split())  # one line, whatever the exception text held
    print(f"{prog}: {what}: {text}", file=sys.stderr)
    return code


def run(prog: str, body, args, user_errors=(ValueError, OSError), failures=()) -> int:
    """``body(args)``'s exit code (None counts as 0); ``user_errors`` -> one line, exit 2;
    ``failures`` (checks that did not hold, e.g. a fit that did not converge) -> one line, exit 1."""
    try:
        return int(body(args) or EXIT_OK)
    except tuple(failures) as exc:
        return fail(prog, exc, EXIT_FAILED, what="failed")
    except tuple(user_errors) as exc:
        return fail(prog, exc)
