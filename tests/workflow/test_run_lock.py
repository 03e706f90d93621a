"""Issue 23, item 5: a run folder is locked (OUT/run.lock, fcntl): a second `run` on it stops
with one line and writes nothing; bad input leaves no run folder at all."""

from __future__ import annotations

import sys

import pytest


def _run(argv, monkeypatch, capsys):
    from glacierfacies.cli import main

    monkeypatch.setattr(sys, "argv", ["glacierfacies", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err.strip()


def test_second_run_on_a_locked_folder_stops_with_one_line(tmp_path, monkeypatch, capsys):
    import os

    from glacierfacies.workflow.pipeline import lock_run_folder

    out = tmp_path / "run"
    out.mkdir()
    with lock_run_folder(out):  # the first run, still writing
        code, err = _run(["run", "-o", str(out)], monkeypatch, capsys)
        assert code == 1
        assert err == (f"error: {out}: another `run` (pid {os.getpid()}) is writing this "
                       "folder; wait for it or use another -o")
        assert sorted(p.name for p in out.iterdir()) == ["run.lock"]  # no run_config.json
    with lock_run_folder(out):  # released with its holder: the folder can be run again
        pass


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    import signal
    import subprocess

    from glacierfacies.workflow.pipeline import lock_run_folder

    out = tmp_path / "run"
    out.mkdir()
    code = ("import sys, time; from pathlib import Path; "
            "from glacierfacies.workflow.pipeline import lock_run_folder; "
            f"lock = lock_run_folder(Path({str(out)!r})); print('locked', flush=True); "
            "time.sleep(60)")
    import os

    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.stdout.readline().strip() == "locked"
    from glacierfacies.errors import RunStateError

    with pytest.raises(RunStateError, match=f"pid {proc.pid}"):
        lock_run_folder(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with lock_run_folder(out):
        pass


def test_bad_configuration_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("k_folds: 2.5\n")
    code, err = _run(["run", str(cfg), "-o", str(tmp_path / "run")], monkeypatch, capsys)
    assert code == 1 and err == f"error: {cfg}: `k_folds` must be a whole number, got 2.5"
    assert not (tmp_path / "run").exists()


def test_run_check_validates_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from glacierfacies.cli import main

    monkeypatch.setattr(sys, "argv", ["glacierfacies", "run", "--check", "-o",
                                      str(tmp_path / "run")])
    main()
    assert "built-in sample: configuration and inputs OK" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()
