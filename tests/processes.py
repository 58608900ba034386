"""Real `digest` processes that start in milliseconds, for tests that kill or signal them.

A `python -m digest` process spends over a second importing before it does
anything. `DigestProcess.start` forks each process instead from a multiprocessing
fork server that imported the package once: every child is still a separate
process running the CLI's `main` from the top, with its own environment, that
can be killed with SIGKILL or stopped with SIGTERM at any moment.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import dataclass
from pathlib import Path


def digest_env(
    data_dir: Path, db_url: str, config: Path | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a `digest` process: this one's without any DIGEST_ setting,
    plus a data directory, a database URL, a config file and `extra` variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(DIGEST_DATA_DIR=str(data_dir), DIGEST_DATABASE_URL=db_url, **extra)
    if config is not None:
        env["DIGEST_CONFIG"] = str(config)
    return env


_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["digest.cli", "tests.processes"])


def _run(args: list[str], env: dict[str, str], log: str) -> None:
    """The child: the environment and output of its own, then the command line."""
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from digest.cli import main

    main(args, prog_name="digest")


@dataclass
class DigestProcess:
    """One running `digest ARGS...`; its stdout and stderr go to `log`."""

    process: multiprocessing.process.BaseProcess
    log: Path

    @classmethod
    def start(cls, env: dict[str, str], log: Path, *args: str) -> DigestProcess:
        process = _CONTEXT.Process(target=_run, args=(list(args), env, str(log)), daemon=True)
        process.start()
        return cls(process, log)

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        """SIGKILL: no handler, no cleanup, nothing flushed."""
        self.process.kill()
        self.process.join(30)

    def terminate(self) -> None:
        """SIGTERM, as systemd or a shell's `kill` sends it."""
        self.process.terminate()

    def wait(self, timeout: float = 120) -> int:
        self.process.join(timeout)
        assert self.process.exitcode is not None, f"still running after {timeout} s"
        return self.process.exitcode

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")
