"""Issue 23, item 5: `map` killed with SIGKILL mid-map leaves only hidden temporaries
(`.NAME.PID-xxxx.tmp`), never a final-named file; the next `map` of the same output sweeps
them (their process is gone) and writes the map. Temporaries of a live process are kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.mapping.test_scene_map import _save_model


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and
                  p.name.endswith(".tmp"))


def test_killed_map_leaves_temporaries_that_the_rerun_sweeps(sample_dir, tmp_path, monkeypatch):
    from glacierfacies.cli import main
    from glacierfacies.scenes.reader import find_scenes

    scene = next(s for s in find_scenes(sample_dir / "scenes") if s.name.startswith("S2"))
    model = _save_model(tmp_path / "fold0.pt", 0)
    out = tmp_path / "maps"
    out.mkdir()
    args = ["map", str(scene), "--dem", str(sample_dir / "dem.tif"), "--outlines",
            str(sample_dir / "outlines.gpkg"), "--model", str(model), "-o",
            str(out / "f.tif"), "--confidence", str(out / "c.tif"), "--probabilities",
            str(out / "p.tif")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "glacierfacies.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _temporaries(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the map finished before it could be killed"
    left = _temporaries(out)
    assert left and all(n.startswith(f".f.tif.{proc.pid}-") for n in left), left
    assert not [p for p in out.iterdir() if not p.name.startswith(".")]  # nothing final-named
    # a temporary of a live process (this one) must survive the sweep
    live = out / f".c.tif.{os.getpid()}-keepme.tmp"
    live.write_bytes(b"being written")
    monkeypatch.setattr(sys, "argv", ["glacierfacies", *args])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code
    assert _temporaries(out) == [live.name]
    final = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert final >= {"c.tif", "f.qml", "f.tif", "p.tif"}, final


def test_sweep_keeps_live_and_recent_untagged_temporaries(tmp_path):
    from glacierfacies._io import STALE_UNTAGGED_S, sweep_temporaries, write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    names = {"dead": f".x.txt.{dead_pid}-abc.tmp", "live": f".x.txt.{os.getpid()}-def.tmp",
             "untagged_new": ".x.txt.q1w2e3.tmp", "untagged_old": ".x.txt.r4t5y6.tmp",
             "other": f".y.txt.{dead_pid}-abc.tmp"}
    for n in names.values():
        (tmp_path / n).write_text("partial")
    (tmp_path / names["dead"]).unlink()
    (tmp_path / names["dead"]).mkdir()  # scratch folders are swept too
    old = time.time() - STALE_UNTAGGED_S - 10
    os.utime(tmp_path / names["untagged_old"], (old, old))
    removed = sweep_temporaries(tmp_path / "x.txt")
    assert sorted(p.name for p in removed) == sorted([names["dead"], names["untagged_old"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names["live"], names["untagged_new"], names["other"]])
    write_text(tmp_path / "x.txt", "done")  # atomic_output sweeps and names its own by pid
    assert (tmp_path / "x.txt").read_text() == "done"
