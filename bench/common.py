"""Helpers shared by the benchmarks: hardware, percentiles, a server in a subprocess."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
# Short everyday questions, answered in a sentence or two: the load, fairness and stage-cost
# benchmarks ask the same ones.
SHORT_QUESTIONS = (
    "What is the capital of France?",
    "Name three kinds of fruit.",
    "What is two plus two?",
    "Why is the sky blue?",
    "Give me one tip for sleeping better.",
    "What is a rainbow?",
    "Tell me a fun fact about cats.",
    "How do I boil an egg?",
)


def hardware() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    llama_build = "unknown"
    with contextlib.suppress(Exception):
        import llama_cpp

        llama_build = llama_cpp.llama_print_system_info().decode().strip()
    return {
        "cpu": model,
        "llama_cpp_build": llama_build,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "load_average": os.getloadavg(),
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def stop(proc: subprocess.Popen[Any], wait_s: float = 10.0) -> None:
    """End a process the benchmark started: SIGTERM, then SIGKILL if it has not gone."""
    proc.terminate()
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextlib.contextmanager
def server_process(
    *extra: str,
    checkout: Path | None = None,
    log_file: Path | None = None,
    pids: list[int] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[int]:
    """`chinwag serve` on a free loopback port, in its own process; yields the port.

    checkout: run the server package of another source tree (e.g. a `git worktree` of an
    older commit) with this environment's packages, to compare two versions in one run.
    log_file: the server's debug log goes there (timestamps of each step of a turn).
    pids: gets the server's process id (to read its CPU time).
    env: more environment variables (settings, e.g. CHINWAG_TTS__STREAM_DECODER=false)."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "port"
        environ = {**os.environ, **(env or {})}
        if checkout is not None:
            # `python -m server` finds the package in the working directory before the
            # editable install of this checkout.
            environ["PYTHONPATH"] = str(checkout.resolve())
        verbose = ("--verbose",) if log_file is not None else ()
        log = log_file.open("w") if log_file is not None else None
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", *verbose, "serve", "--port", "0", "--ready-file",
             str(ready), *extra],
            stdout=subprocess.DEVNULL,
            stderr=log if log is not None else subprocess.PIPE,
            text=True,
            cwd=checkout,
            env=environ,
        )  # fmt: skip
        if pids is not None:
            pids.append(proc.pid)
        try:
            deadline = time.monotonic() + 300
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    reason = proc.stderr.read() if proc.stderr else f"see {log_file}"
                    raise RuntimeError(f"server did not start: {reason}")
                time.sleep(0.1)
            yield int(ready.read_text())
        finally:
            stop(proc)
            if log is not None:
                log.close()
