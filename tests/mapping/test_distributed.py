"""`map-many` on a real Dask deployment: a `dask scheduler` and two `dask worker` processes on
localhost, one worker killed midway; the run still ends with the files of one-by-one mapping."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mapping.test_scene_map import _save_model

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        OMP_NUM_THREADS="1")


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:  # own process group: the finaliser kills it whole
        return subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=fh,
                                stderr=subprocess.STDOUT, env=_env(), start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def _wait(cond, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                              for p in logs if p.is_file())
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path):
    """A scheduler on a free localhost port (the OS picks it: --port 0, address read back
    from the scheduler file) and two single-threaded workers without nannies."""
    sched_file = tmp_path / "scheduler.json"
    logs = [tmp_path / "scheduler.log", tmp_path / "w0.log", tmp_path / "w1.log"]
    procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(sched_file)], logs[0])]
    try:
        _wait(lambda: sched_file.is_file() and sched_file.stat().st_size > 0, 90,
              "the scheduler", logs)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            procs.append(_start(["worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                 "--no-nanny", "--no-dashboard", "--name", f"w{i}",
                                 "--local-directory", str(tmp_path / f"w{i}"),
                                 "--memory-limit", "0"], logs[1 + i]))
        yield {"address": address, "workers": procs[1:], "logs": logs}
    finally:
        for p in reversed(procs):
            _stop(p)


@pytest.mark.slow
def test_map_many_on_a_real_cluster_survives_a_killed_worker(cluster, sample_dir, tmp_path):
    from dask.distributed import Client

    from glacierfacies.mapping.scene_map import map_scene, output_paths
    from glacierfacies.scenes.reader import find_scenes

    scenes = find_scenes(sample_dir / "scenes")
    model = _save_model(tmp_path / "fold0.pt", 0)
    dem, outlines = sample_dir / "dem.tif", sample_dir / "outlines.gpkg"
    address, logs = cluster["address"], cluster["logs"]
    assert address.startswith("tcp://127.0.0.1:")
    with Client(address, timeout="30s") as client:
        _wait(lambda: len(client.scheduler_info()["workers"]) == 2, 120, "two workers", logs)
        pids = client.run(os.getpid)  # worker address -> pid
        many = tmp_path / "many"
        many.mkdir()
        cmd = [sys.executable, "-m", "glacierfacies.cli", "map-many",
               str(sample_dir / "scenes" / "*"), "--dem", str(dem), "--outlines", str(outlines),
               "--model", str(model), "-o", str(many), "--confidence",
               "--scheduler", address]
        run_log = tmp_path / "map_many.log"
        with open(run_log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(),
                                    start_new_session=True)
        try:
            # midway: a scene is running on a worker and not every map is written yet
            busy: list[str] = []

            def some_worker_busy() -> bool:
                busy[:] = [w for w, keys in client.processing().items() if keys]
                return bool(busy) or proc.poll() is not None

            _wait(some_worker_busy, 180, "a scene to start", logs + [run_log])
            assert proc.poll() is None, run_log.read_text()[-2000:]
            victim = next(p for p in cluster["workers"] if p.pid == pids[busy[0]])
            n_before = len(list(many.glob("*_facies.tif")))
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
            assert n_before < len(scenes)
            proc.wait(timeout=600)
        finally:
            _stop(proc)
        out = run_log.read_text()
        assert proc.returncode == 0, out[-3000:]
        assert f"{len(scenes)} done" in out, out[-3000:]
        assert len(client.scheduler_info()["workers"]) == 1  # the other worker finished
    one = tmp_path / "one"
    one.mkdir()
    for s in scenes:  # the reference: scene by scene, in this process
        facies, conf = output_paths(s, one, True)
        map_scene(s, dem, outlines, [model], facies, confidence_out=conf, progress=False)
    assert sorted(os.listdir(many)) == sorted([*os.listdir(one), "catalog.json"])  # no temporaries left either
    match, mismatch, errors = filecmp.cmpfiles(one, many, sorted(os.listdir(one)), shallow=False)
    # map, .qml, confidence and the map's STAC item: byte-identical
    assert not mismatch and not errors and len(match) == 4 * len(scenes)
