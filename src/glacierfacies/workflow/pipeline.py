"""The main job: sample or user data -> PatchSet -> training -> maps -> products ->
mass balance -> report, every stage run through `tasks.StageLog`.

Each stage's fingerprint covers the configuration keys and the input files (size, mtime,
content hash: `workflow.inputs`) that it and the stages before it depend on, so a rerun
skips every finished stage, reruns from the first stage whose inputs changed (an edited
label table reruns from `dataset` on), and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from glacierfacies._io import write_json
from glacierfacies.errors import RunStateError
from glacierfacies.layout import get_filepath
from glacierfacies.tasks import StageLog, fingerprint
from glacierfacies.workflow.config import _STAGE_KEYS, RunConfig, _resolve_inputs, load_config
from glacierfacies.workflow.inputs import STAGE_INPUTS, check_run, input_signatures
from glacierfacies.workflow.real_example import stage_real_example
from glacierfacies.workflow.report import stage_report
from glacierfacies.workflow.stages import (
    stage_dataset,
    stage_maps,
    stage_massbalance,
    stage_products,
    stage_sample,
    stage_train,
)

__all__ = ["STAGES", "Run", "run_pipeline"]

STAGES = ("sample", "dataset", "train", "maps", "products", "massbalance", "real", "report")


class Run:
    """One run folder: its configuration and its stage log (markers, timings, skips)."""

    def __init__(self, out: Path, cfg: RunConfig, log: Callable[[str], None] = print):
        self.out = out
        self.cfg = cfg
        self.stages = StageLog(get_filepath("stages", out), log=log, root=out)
        self.signatures: dict[str, list] = {}  # input group -> tasks.file_signature

    @property
    def timings(self) -> dict[str, float]:
        return self.stages.timings

    @property
    def skipped(self) -> list[str]:
        return self.stages.skipped

    @property
    def markers(self) -> Path:
        return self.stages.marker_dir

    def sign_inputs(self, inputs) -> None:
        """Sign the input files once (size, mtime, hash): they join the stage fingerprints."""
        self.signatures = input_signatures(inputs, self.out)

    def _inputs(self, stage: str) -> dict[str, list]:
        upto = STAGES[: STAGES.index(stage) + 1]
        return {g: self.signatures[g] for s in upto for g in STAGE_INPUTS[s]
                if self.signatures.get(g)}

    def _fingerprint(self, stage: str) -> str:
        """The configuration keys and the input files of this stage and the ones before it."""
        upto = STAGES[: STAGES.index(stage) + 1]
        keys = tuple(k for s in upto for k in _STAGE_KEYS[s])
        inputs = self._inputs(stage)
        if not inputs:
            return self.cfg.fingerprint(keys)
        return fingerprint({"config": self.cfg.fingerprint(keys), "inputs": inputs})

    def done(self, stage: str) -> bool:
        return self.stages.done(stage, self._fingerprint(stage))

    def stage(self, name: str, fn: Callable[[], dict], outputs: tuple[Path, ...] = (),
              reset: Callable[[], None] | None = None) -> dict:
        """Run one stage unless done. `reset` clears partial outputs that a stage resumes
        from (training checkpoints) when they belong to another fingerprint."""
        ran_before = name in self.stages.timings
        fp = self._fingerprint(name)
        if reset is not None and not self.stages.done(name, fp):
            started = self.markers / f"{name}.started"
            if not started.is_file() or started.read_text() != fp:
                reset()
            self.markers.mkdir(parents=True, exist_ok=True)
            started.write_text(fp)
        summary = self.stages.run(name, fp, fn, outputs=outputs,
                                  inputs=self._inputs(name) or None)
        if name in self.stages.timings and not ran_before:  # it ran: later stages run again
            self.stages.invalidate(STAGES[STAGES.index(name) + 1:])
        return summary


def run_pipeline(config: str | Path | None, out: str | Path,
                 log: Callable[[str], None] = print) -> Path:
    """Run (or resume) the whole chain into OUT and return the report's path.

    Every input is checked before anything is written: bad input leaves no file behind.
    """
    cfg, _ = load_config(config)
    out = Path(out).resolve()
    user_inputs = check_run(cfg, out, None if config is None else Path(config))
    out.mkdir(exist_ok=True)
    with lock_run_folder(out):  # a second `run` on OUT stops here, writing nothing
        write_json(get_filepath("run_config", out), dataclasses.asdict(cfg))
        return _run_locked(cfg, out, user_inputs, log)


def lock_run_folder(out: Path):
    """An exclusive lock on OUT/run.lock (fcntl.flock, released when the process ends, even
    killed); a RunStateError naming the folder when another `run` holds it."""
    import fcntl
    import os

    path = get_filepath("run_lock", out)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunStateError(out, f"another `run` (pid {holder}) is writing this folder; wait "
                                 "for it or use another -o") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return _Lock(fd)


class _Lock:
    def __init__(self, fd: int):
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        import fcntl
        import os

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _run_locked(cfg: RunConfig, out: Path, user_inputs, log: Callable[[str], None]) -> Path:
    run = Run(out, cfg, log)
    t0 = time.perf_counter()
    path = lambda key: get_filepath(key, out)  # noqa: E731
    if cfg.uses_sample:
        run.stage("sample", lambda: stage_sample(cfg, out), (path("sample"),))
    inputs = user_inputs or _resolve_inputs(cfg, out)
    run.sign_inputs(inputs)
    run.stage("dataset", lambda: stage_dataset(cfg, out, inputs), (path("dataset"),))
    run.stage("train", lambda: stage_train(cfg, out, inputs),
              (get_filepath("final_models", path("train")), get_filepath("metrics", path("train"))),
              reset=lambda: shutil.rmtree(path("train"), ignore_errors=True))
    run.stage("maps", lambda: stage_maps(cfg, out, inputs), (path("maps"),))
    products_summary = run.stage("products", lambda: stage_products(cfg, out, inputs),
                                 (path("products"),))
    run.stage("massbalance", lambda: stage_massbalance(cfg, out, inputs), (path("massbalance"),))
    real = None
    if cfg.uses_sample:  # the demo: a real glacier beside the synthetic one, built-in models
        real = run.stage("real", lambda: stage_real_example(out, cfg.map_config),
                         (path("real"),))
    if run.timings or not path("report").is_file():  # something changed: re-report
        run.stages.invalidate(["report"])
    run.stage("report", lambda: stage_report(cfg, out, inputs, run.timings, products_summary,
                                             real),
              (path("report"),))
    log(f"finished in {time.perf_counter() - t0:.1f} s")
    return path("report")
