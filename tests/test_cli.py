"""The command line: start-up refuses broken config and busy ports with an actionable message,
and the leaderboard/export/import subcommands work on a real database."""
import json
import socket
import subprocess
import sys

from .conftest import ROOT, smol_catalog


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "arena", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_busy_port_names_the_flag_to_change_it(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run("--port", str(port), "--models", str(smol_catalog(tmp_path / "m.yaml")),
                     "--data-dir", str(tmp_path / "d"))
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr and f"--port {port + 1}" in result.stderr


def test_malformed_catalog_stops_start_up_naming_file_and_entry(tmp_path):
    bad = tmp_path / "models.yaml"
    bad.write_text("models:\n  - id: x\n    name: X\n    engine: llamacpp\n")
    result = run("--models", str(bad), "--data-dir", str(tmp_path / "d"))
    assert result.returncode != 0
    assert f"{bad}:2: model 'x': missing required key 'source'" in result.stderr


def test_import_then_leaderboard_and_export_from_the_command_line(tmp_path):
    lines = [{"id": f"b{i}", "model_a": "m1", "model_b": "m2", "winner": w, "anony": True, "tstamp": i}
             for i, w in enumerate(["model_a"] * 8 + ["model_b"] * 4)]
    battles = tmp_path / "battles.jsonl"
    battles.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    data = ["--data-dir", str(tmp_path / "d")]
    assert "imported 12 battle(s) (shown but not rated" in run("import", str(battles), *data).stdout
    assert "No rated (blind) battles yet." in run("leaderboard", *data).stdout  # a file can't rate itself
    trusted = ["--data-dir", str(tmp_path / "t")]
    assert "imported 12 battle(s) (blind ones rated" in run("import", str(battles), "--trust-import", *trusted).stdout
    board = run("leaderboard", *trusted).stdout
    assert "12 rated battles." in board and "m1" in board and "rating" in board
    assert "No rated (blind) battles yet." in run("leaderboard", "--exclude-imported", *trusted).stdout
    out = tmp_path / "votes.csv"
    assert "wrote 12 vote(s)" in run("export", "--format", "csv", "-o", str(out), *data).stdout
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"model_a": "m1"}\n')
    result = run("import", str(broken), *data)
    assert result.returncode == 2 and "broken.jsonl line 1" in result.stderr


def test_database_flag_points_every_command_at_postgresql(tmp_path, postgres):
    """--database postgresql://… replaces <data dir>/arena.db for import, leaderboard and export."""
    url = postgres.new_database()
    battles = tmp_path / "battles.jsonl"
    battles.write_text("".join(json.dumps({"id": f"b{i}", "model_a": "m1", "model_b": "m2",
                                           "winner": "model_a" if i % 3 else "model_b", "anony": True, "tstamp": i})
                               + "\n" for i in range(12)))
    flags = ["--data-dir", str(tmp_path / "d"), "--database", url]
    assert "imported 12 battle(s) (blind ones rated" in run("import", str(battles), "--trust-import", *flags).stdout
    assert "12 already stored" in run("import", str(battles), *flags).stdout  # the same database: all known
    assert "m1" in run("leaderboard", *flags).stdout
    assert "wrote 12 vote(s)" in run("export", "--format", "jsonl", "-o", str(tmp_path / "b.jsonl"), *flags).stdout
    assert not (tmp_path / "d" / "arena.db").exists()


def test_unreachable_database_stops_start_up_and_commands_with_its_reason(tmp_path):
    dead = "postgresql://arena:secret@127.0.0.1:1/arena"
    for args in (("--models", str(smol_catalog(tmp_path / "m.yaml"))), ("leaderboard",)):
        result = run(*args, "--data-dir", str(tmp_path / "d"), "--database", dead)
        assert result.returncode != 0
        assert "cannot open the database postgresql+psycopg://arena:***@127.0.0.1:1/arena" in result.stderr
        assert "secret" not in result.stderr and "Connection refused" in result.stderr
