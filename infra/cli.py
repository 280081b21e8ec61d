"""The one command-line helper: argparse with one-line errors, ``--json``, and exit codes.

Every ``python -m ...`` entry point builds its parser with ``parser`` and runs its body with
``run``: a bad flag, a bad value or a missing file ends in ONE line on stderr naming the fix and
exit code 2 (``EXIT_USAGE``); a check that fails (a paper claim, a derivation, a fit) exits 1
(``EXIT_FAILED``); Ctrl-C ends in one line and exit 130 (``EXIT_INTERRUPTED``, the shell's code
for SIGINT); success 0.

Float flags: every ``add_argument(type=float)`` of a ``Parser`` parses with ``finite_float``, so
``nan`` and ``inf`` are usage errors at parse time (no flag of this project gives them a meaning:
``--max-grad-norm nan`` would otherwise mean "no clipping" without a word). Output paths:
``check_output_file`` / ``check_output_dir`` refuse an unwritable or wrongly shaped output before
any compute is spent.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "INTERRUPTED", "MissingResults",
           "Parser", "parser", "finite_float", "check_output_file", "check_output_dir", "fail", "run",
           "interruptible"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
INTERRUPTED = "interrupted (Ctrl-C); rerun the same command to resume from what was saved"


class MissingResults(ValueError):
    """A result a command reads was never produced (a run, a result file): a user error whose one
    line names the command that produces it. Distinct from a malformed result, so that a caller
    drawing whatever a folder holds (``python -m figures --from-results``) can skip it."""


def finite_float(text: str) -> float:
    """argparse type: a float that is neither NaN nor +-inf."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; pass a finite value")
    return value


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line and exit 2, and whose float
    flags refuse non-finite values."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # argparse looks a flag's type up in this registry (shared with argument groups), so
        # every ``type=float`` of this parser parses with finite_float.
        self.register("type", float, finite_float)

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


def check_output_file(path, flag: str) -> Path:
    """``path`` can be written as a file: not a folder, and its nearest existing parent is a
    writable folder. ValueError naming ``flag`` otherwise (checked before any compute)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; pass a file path")
    _check_parent(path, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} is not writable; pass a writable path")
    return path


def check_output_dir(path, flag: str) -> Path:
    """``path`` can be (or become) a folder we write into: not a file, and writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; pass a folder path")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{flag} {path} is not writable; pass a writable folder")
        return path
    _check_parent(path, flag)
    return path


def _check_parent(path: Path, flag: str) -> None:
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: {parent} is a file, not a folder; pass another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {parent} is not writable; pass a writable path")


def fail(prog: str, message, code: int = EXIT_USAGE, what: str = "error") -> int:
    """Print ``prog: error: message`` as one line on stderr; return ``code``."""
    text = " ".join(str(message).split())  # one line, whatever the exception text held
    print(f"{prog}: {what}: {text}", file=sys.stderr)
    return code


def run(prog: str, body, args, user_errors=(ValueError, OSError), failures=()) -> int:
    """``body(args)``'s exit code (None counts as 0); ``user_errors`` -> one line, exit 2;
    ``failures`` (checks that did not hold, e.g. a fit that did not converge) -> one line, exit 1;
    Ctrl-C -> one line, exit 130."""
    try:
        return int(body(args) or EXIT_OK)
    except KeyboardInterrupt:
        return fail(prog, INTERRUPTED, EXIT_INTERRUPTED, what="stopped")
    except tuple(failures) as exc:
        return fail(prog, exc, EXIT_FAILED, what="failed")
    except tuple(user_errors) as exc:
        return fail(prog, exc)


def interruptible(prog: str, main, argv=None) -> int:
    """``main(argv)`` with Ctrl-C turned into one line and exit 130 (for entry points, such as a
    command dispatcher, whose body does not go through ``run``)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        return fail(prog, INTERRUPTED, EXIT_INTERRUPTED, what="stopped")
