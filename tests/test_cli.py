import subprocess
import sys

from geocore.cli.main import main


def test_help_lists_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("score", "evaluate", "cells"):
        assert cmd in out


def test_python_dash_m_and_one_line_errors():
    proc = subprocess.run(
        [sys.executable, "-m", "geocore", "score", "--pred", "/nonexistent.csv", "--truth", "/nonexistent.csv"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: /nonexistent.csv: no such file")


def test_usage_mistake_is_not_a_traceback(capsys):
    assert main(["score", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert "No such option" in err and "Traceback" not in err


def test_help_imports_no_heavy_library():
    """`geocore --help` answers without torch, open_clip, timm, lightning or geopandas (seconds of start-up)."""
    code = ("import sys; from geocore.cli.main import main; code = main(['--help']); "
            "print([m for m in ('torch', 'open_clip', 'timm', 'lightning', 'geopandas') if m in sys.modules], code)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "[] 0", proc.stdout[-500:] + proc.stderr[-500:]
    assert "locate" in proc.stdout and "calibrate" in proc.stdout
