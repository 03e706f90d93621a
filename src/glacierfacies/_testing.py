"""Test hooks, gathered in one place and reached only through callbacks.

The kill-and-resume tests run the CLI in a subprocess, so a hook must travel there through
the environment: `batch_hook_from_env` turns `GLACIERFACIES_TEST_KILL_AT=round:fold:epoch:batch`
into an `on_batch` callback that SIGKILLs the process just before that training batch. The
CLI passes it to the training loop; the loop itself never reads the environment.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping

__all__ = ["KILL_AT_ENV", "BatchHook", "batch_hook_from_env", "kill_at"]

KILL_AT_ENV = "GLACIERFACIES_TEST_KILL_AT"  # "round:fold:epoch:batch" -> SIGKILL there

BatchHook = Callable[[int, int, int, int], None]  # (round, fold, epoch, batch) before a batch


def kill_at(spec: str) -> BatchHook:
    """A callback that SIGKILLs this process before batch `spec` ("round:fold:epoch:batch")."""
    spec = spec.strip()

    def hook(round_no: int, fold: int, epoch: int, batch: int) -> None:
        if spec == f"{round_no}:{fold}:{epoch}:{batch}":
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def batch_hook_from_env(environ: Mapping[str, str] | None = None) -> BatchHook | None:
    """The test hook the environment asks for, or None (the normal case)."""
    spec = (os.environ if environ is None else environ).get(KILL_AT_ENV)
    return kill_at(spec) if spec else None
