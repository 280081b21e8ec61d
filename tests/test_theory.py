"""``python -m theory``: every derivation verified, JSON and markdown outputs, one-line usage errors."""
import contextlib
import io
import json

import pytest

from theory.__main__ import main
from theory.derivations import CHECKS, ITEMS, select


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def full_json():
    code, out, _ = _run(["--json"])
    return code, json.loads(out)


@pytest.mark.slow
def test_json_lists_every_check_verified_covering_items_1_to_8(full_json):
    code, doc = full_json
    checks = doc["checks"]
    failed = [c["id"] for c in checks if c["verified"] is not True]
    assert code == 0 and not failed, failed
    assert len(checks) >= 20
    assert all({"id", "statement", "verified", "method"} <= set(c) for c in checks)
    assert {c["item"] for c in checks} == set(range(1, 9))
    assert {int(c["id"].split(".")[0]) for c in checks} == set(range(1, 9))  # ids name their item
    assert len({c["id"] for c in checks}) == len(checks)
    assert all(c["statement"] and c["method"] for c in checks)


def test_every_registered_check_is_in_an_item_with_a_title():
    assert {c.item for c in CHECKS} == set(ITEMS)
    assert all(c.id.startswith(f"{c.item}.") for c in CHECKS)


def test_table_and_exit_code_for_a_selection():
    code, out, _ = _run(["--only", "8"])
    assert code == 0
    ids = [c.id for c in CHECKS if c.item == 8]
    assert len(ids) >= 5 and all(i in out for i in ids)
    assert f"{len(ids)}/{len(ids)} checks verified" in out
    assert "how:" in out


def test_a_failing_check_gives_a_nonzero_exit_code(monkeypatch):
    from theory.derivations.registry import Check
    bad = Check("1.always-false", 1, "test", "a statement that is false", "returns False", lambda: False)
    monkeypatch.setattr("theory.derivations.CHECKS", CHECKS + [bad])
    code, out, _ = _run(["--only", "1.always-false"])
    assert code == 1 and "NO" in out and "FAILED: 1.always-false" in out


def test_markdown_document(tmp_path):
    path = tmp_path / "docs" / "derivations.md"
    code, out, _ = _run(["--only", "1", "6.comparison-ode", "8", "--markdown", str(path)])
    assert code == 0 and f"wrote {path}" in out
    text = path.read_text()
    assert text.startswith("# Machine-checked derivations")
    chosen = select(["1", "6.comparison-ode", "8"])
    for c in chosen:
        assert f"### `{c.id}`" in text
    assert "## 1. " in text and "## 8. " in text and "## 2. " not in text
    assert text.count("- verified: yes") == len(chosen)
    # LaTeX from sympy: Eq. 3 and the dsolve solution of the comparison ODE are rendered as formulas.
    assert text.count("$$") % 2 == 0 and text.count("$$") >= 2 * len(chosen)
    assert r"\mathcal{L}_{\mathrm{NPO},\beta}" in text and r"\log{\left(C \beta \eta_{0} t + 1 \right)}" in text
    assert not list(path.parent.glob(".derivations.md.*"))  # atomic write left no temporary file


@pytest.mark.parametrize("argv, needle", [
    (["--bogus"], "unrecognized arguments"),
    (["--only", "9"], "unknown check '9'"),
    (["--only", "no.such-check"], "unknown check"),
])
def test_usage_errors_are_one_line_with_exit_code_2(argv, needle):
    code, out, err = _run(argv)
    assert code == 2 and out == ""
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unwritable_markdown_path_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = _run(["--only", "4.kto", "--markdown", str(blocker / "doc.md")])
    assert code == 2 and "cannot write" in err and len(err.strip().splitlines()) == 1


def test_list_prints_ids():
    code, out, _ = _run(["--list"])
    assert code == 0 and out.split()[0] == CHECKS[0].id and len(out.strip().splitlines()) == len(CHECKS)
