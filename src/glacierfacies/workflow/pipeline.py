"""The main job: sample or user data -> PatchSet -> training -> maps -> products ->
mass balance -> report, every stage run through `tasks.StageLog`.

Each stage's fingerprint covers the configuration keys it and the stages before it depend
on, so a rerun skips every finished stage and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from glacierfacies._io import write_json
from glacierfacies.errors import InputError
from glacierfacies.layout import get_filepath
from glacierfacies.tasks import StageLog
from glacierfacies.workflow.config import _STAGE_KEYS, RunConfig, _resolve_inputs, load_config
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

STAGES = ("sample", "dataset", "train", "maps", "products", "massbalance", "report")


class Run:
    """One run folder: its configuration and its stage log (markers, timings, skips)."""

    def __init__(self, out: Path, cfg: RunConfig, log: Callable[[str], None] = print):
        self.out = out
        self.cfg = cfg
        self.stages = StageLog(get_filepath("stages", out), log=log, root=out)

    @property
    def timings(self) -> dict[str, float]:
        return self.stages.timings

    @property
    def skipped(self) -> list[str]:
        return self.stages.skipped

    @property
    def markers(self) -> Path:
        return self.stages.marker_dir

    def _fingerprint(self, stage: str) -> str:
        upto = STAGES[: STAGES.index(stage) + 1]
        keys = tuple(k for s in upto for k in _STAGE_KEYS[s])
        return self.cfg.fingerprint(keys)

    def done(self, stage: str) -> bool:
        return self.stages.done(stage, self._fingerprint(stage))

    def stage(self, name: str, fn: Callable[[], dict], outputs: tuple[Path, ...] = ()) -> dict:
        ran_before = name in self.stages.timings
        summary = self.stages.run(name, self._fingerprint(name), fn, outputs=outputs)
        if name in self.stages.timings and not ran_before:  # it ran: later stages run again
            self.stages.invalidate(STAGES[STAGES.index(name) + 1:])
        return summary


def run_pipeline(config: str | Path | None, out: str | Path,
                 log: Callable[[str], None] = print) -> Path:
    """Run (or resume) the whole chain into OUT and return the report's path."""
    cfg, _ = load_config(config)
    out = Path(out).resolve()
    if not out.parent.is_dir():
        raise InputError(out.parent, "output folder's parent does not exist")
    out.mkdir(exist_ok=True)
    write_json(get_filepath("run_config", out), dataclasses.asdict(cfg))
    run = Run(out, cfg, log)
    t0 = time.perf_counter()
    path = lambda key: get_filepath(key, out)  # noqa: E731
    if cfg.uses_sample:
        run.stage("sample", lambda: stage_sample(cfg, out), (path("sample"),))
    inputs = _resolve_inputs(cfg, out)
    run.stage("dataset", lambda: stage_dataset(cfg, out, inputs), (path("dataset"),))
    run.stage("train", lambda: stage_train(cfg, out, inputs),
              (get_filepath("final_models", path("train")), get_filepath("metrics", path("train"))))
    run.stage("maps", lambda: stage_maps(cfg, out, inputs), (path("maps"),))
    products_summary = run.stage("products", lambda: stage_products(cfg, out, inputs),
                                 (path("products"),))
    run.stage("massbalance", lambda: stage_massbalance(cfg, out, inputs), (path("massbalance"),))
    if run.timings or not path("report").is_file():  # something changed: re-report
        run.stages.invalidate(["report"])
    run.stage("report", lambda: stage_report(cfg, out, inputs, run.timings, products_summary),
              (path("report"),))
    log(f"finished in {time.perf_counter() - t0:.1f} s")
    return path("report")
