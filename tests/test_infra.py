"""infra: atomic files keep the usual permissions and never leave partial output; the CLI helper's
errors are one line with the documented exit codes; importing infra changes nothing."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from infra import cli
from infra.files import read_npz, write_json, write_npz, write_text


def test_atomic_writes_get_the_permissions_open_would_give(tmp_path):
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_npz(tmp_path / "b.npz", y=[1.0])
        (tmp_path / "ref").write_text("x")
    finally:
        os.umask(old)
    want = (tmp_path / "ref").stat().st_mode & 0o777
    assert want == 0o640
    assert {(tmp_path / n).stat().st_mode & 0o777 for n in ("a.txt", "b.npz")} == {want}
    assert read_npz(tmp_path / "b.npz")["y"].tolist() == [1.0]


def test_a_failed_write_leaves_nothing(tmp_path):
    write_json(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(TypeError):
        write_json(tmp_path / "r.json", {"bad": object()})
    assert (tmp_path / "r.json").read_text() == '{\n  "ok": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_importing_infra_does_not_touch_the_umask():
    code = ("import os; os.umask(0o077); import infra.files, infra.cache, infra.stages, infra.cli; "
            "print(oct(os.umask(0)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0o77"


def test_cli_errors_are_one_line_with_exit_codes(capsys):
    p = cli.parser("prog", "doc")
    p.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as exc:
        p.parse_args(["--n", "x"])
    assert exc.value.code == cli.EXIT_USAGE
    assert capsys.readouterr().err.count("\n") == 1

    def body(args):
        raise ValueError("bad value\nover two lines; pass --n 3")

    assert cli.run("prog", body, p.parse_args(["--json"])) == cli.EXIT_USAGE
    assert capsys.readouterr().err == "prog: error: bad value over two lines; pass --n 3\n"

    class Failed(Exception):
        pass

    def failing(args):
        raise Failed("fit did not converge")

    assert cli.run("prog", failing, None, failures=(Failed,)) == cli.EXIT_FAILED
    assert cli.run("prog", lambda args: None, None) == cli.EXIT_OK


def test_a_stage_whose_outputs_are_missing_or_truncated_reruns(tmp_path):
    from infra.stages import Stages
    calls = []

    def produce(path):
        calls.append(1)
        (path / "model").mkdir()
        (path / "model" / "weights.bin").write_bytes(b"w" * 64)
        return {"n": len(calls)}

    stages = Stages(tmp_path, log=lambda *a: None)
    first = stages.run("s", {"k": 1}, [], produce)
    assert stages.run("s", {"k": 1}, [], produce)["path"] == first["path"] and len(calls) == 1
    (first["path"] / "model" / "weights.bin").unlink()                   # deleted output
    again = stages.run("s", {"k": 1}, [], produce)
    assert len(calls) == 2 and again["info"] == {"n": 2} and again["hash"] == first["hash"]
    (first["path"] / "model" / "weights.bin").write_bytes(b"w" * 10)     # truncated output
    assert stages.run("s", {"k": 1}, [], produce)["info"] == {"n": 3}
    assert stages.run("s", {"k": 1}, [], produce)["info"] == {"n": 3}    # complete again: skipped
