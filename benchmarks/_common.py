"""Shared pieces of the benchmarks: backlogs, a backend in its own process, stats, tables.

Every benchmark script runs alone (``python benchmarks/<name>.py``) and with ``--json PATH``
also writes its headline numbers for ``run_all.py``. The local backend runs in a child process
(``_backend.py``) so that the client being measured has its own core and event loop.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import zlib
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from arkor_trio.server._store import DB_NAME, Store, utc_now

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

    from arkor_trio import ArkorClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRATCH = ROOT / "bench-scratch"
SCOPE = {"orgSlug": "local", "projectSlug": "default"}
BACKLOG_JOB = "job_backlog"
TICK = "bench.tick"


# --- backlogs --------------------------------------------------------------------------------


def check_of(n: int, pad: str) -> int:
    """The checksum a tick carries: crc32 of ``"<n>:<pad>"``."""
    return zlib.crc32(f"{n}:{pad}".encode())


def tick_payloads(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` checksummed ``bench.tick`` events (``n`` = 1..count, the same as their ids)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for n in range(1, count + 1):
        pad = rng.randbytes(rng.randint(16, 48)).hex()
        out.append({"type": TICK, "n": n, "pad": pad, "check": check_of(n, pad)})
    return out


def log_payloads(count: int) -> list[dict[str, Any]]:
    """A realistic run: ``training.started``, ``count - 2`` logs, ``training.completed``."""
    out: list[dict[str, Any]] = [{"type": "training.started", "metadata": {"backend": "local"}}]
    out += [
        {"type": "training.log", "step": s, "loss": 2.0 / s, "learningRate": 3e-3, "epoch": s / 1e3}
        for s in range(1, count - 1)
    ]
    out.append({"type": "training.completed", "artifacts": [{"pathname": "adapter.npz"}]})
    return out


def fill(data_dir: Path, job_id: str, payloads: Sequence[dict[str, Any]]) -> None:
    """Write a job and its events (the last one terminal) straight into a data dir's store.

    The events before the last are bulk-inserted with one ``executemany`` (a million take a few
    seconds instead of ~25 s through ``Store.append_many``), in the store's own row format; the
    terminal one goes through ``Store.append`` so that the job row ends as the store makes it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.in_dir(data_dir)
    try:
        store.create_job(
            job_id=job_id, org_id="org_local", project_id="proj_default", name=job_id, config={}
        )
    finally:
        store.close()
    stamp = utc_now()
    encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode  # as dump_json
    rows = (
        (job_id, seq, p["type"], encode({**p, "jobId": job_id, "timestamp": stamp}))
        for seq, p in enumerate(payloads[:-1], start=1)
    )
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO events (job_id, seq, type, payload) VALUES (?, ?, ?, ?)", rows
            )
    finally:
        conn.close()
    store = Store.in_dir(data_dir)
    try:
        store.append(job_id, payloads[-1])
    finally:
        store.close()


def verify(received: Sequence[tuple[str | None, Any]], expected_last: int | None) -> dict[str, int]:
    """Loss, duplication and corruption of what a client delivered from a tick backlog.

    ``received`` holds ``(event id, payload)`` pairs, the payload a dict or the raw data text.
    A delivered tick is corrupted when its data is not JSON, its checksum is wrong, or its
    ``n`` differs from its frame id. With ``expected_last`` None (a client stopped early),
    loss counts the ids missing below the highest id delivered.
    """
    seen: set[int] = set()
    dup = corrupt = 0
    for event_id, payload in received:
        data = payload
        if isinstance(payload, str):
            try:
                data = json.loads(payload)
            except ValueError:
                corrupt += 1
                continue
        try:
            ident = int(event_id or "")
        except ValueError:
            corrupt += 1
            continue
        if ident in seen:
            dup += 1
            continue
        seen.add(ident)
        if not isinstance(data, dict) or (
            data.get("type") == TICK
            and (
                data.get("n") != ident or data.get("check") != check_of(ident, str(data.get("pad")))
            )
        ):
            corrupt += 1
    last = expected_last if expected_last is not None else max(seen, default=0)
    lost = sum(1 for i in range(1, last + 1) if i not in seen)
    return {"delivered": len(received), "lost": lost, "dup": dup, "corrupt": corrupt}


# --- the backend in a child process ----------------------------------------------------------


@attrs.frozen
class BackendProcess:
    """A local backend running in a child process."""

    base_url: str
    token: str
    pid: int

    def client(self, **kwargs: Any) -> ArkorClient:
        """An ``ArkorClient`` for the local scope of this backend."""
        from arkor_trio.server._serve import local_client

        return local_client(self.base_url, self.token, **kwargs)

    def headers(self) -> dict[str, str]:
        """Authorization and client headers for a hand-written client."""
        from arkor_trio._version import USER_AGENT

        return {"Authorization": f"Bearer {self.token}", "X-Arkor-Client": USER_AGENT}


@asynccontextmanager
async def open_backend_process(
    data_dir: Path, *, max_jobs: int = 1, ping_interval: float = 15.0, engine: str = "bench"
) -> AsyncIterator[BackendProcess]:
    """Run ``_backend.py`` on ``data_dir`` until the block exits (it stops on stdin EOF)."""
    command = [
        sys.executable,
        str(HERE / "_backend.py"),
        str(data_dir),
        "--max-jobs",
        str(max_jobs),
        "--ping-interval",
        str(ping_interval),
        "--engine",
        engine,
    ]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError("the backend process exited before it was ready")
                line += chunk
        info = json.loads(line)
        yield BackendProcess(info["base_url"], info["token"], info["pid"])
    finally:
        with trio.CancelScope(shield=True):
            await process.stdin.aclose()
            with trio.move_on_after(15):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


# --- statistics and output -------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float) -> str:
    """Milliseconds with a precision that suits the magnitude; ``-`` for NaN."""
    if math.isnan(seconds):
        return "-"
    value = seconds * 1000
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown pipe table, padded so that it also reads well in a terminal."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def rss_mb() -> float:
    """This process's resident set size in MiB (``VmRSS`` from ``/proc/self/status``)."""
    with open("/proc/self/status") as fh:  # called rarely, sub-ms
        for row in fh:
            if row.startswith("VmRSS:"):
                return int(row.split()[1]) / 1024
    return math.nan


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    """Write a script's headline numbers for ``run_all.py`` (no-op without ``--json``)."""
    if path:
        Path(path).write_text(json.dumps(payload, indent=1, default=str))


# --- machine description ---------------------------------------------------------------------

PACKAGES = ("arkor-trio", "trio", "httpx", "httpcore", "httpx-sse", "hypercorn", "starlette")


def numbers(rows: Iterable[Sequence[object]], label: str) -> list[float]:
    """The numbers in the value cell of the ``[label, value]`` row ("1.2 / 3,400 / 5 ms" ->
    [1.2, 3400.0, 5.0]); [] when the row is missing or holds none."""
    import re

    for row in rows:
        if row and row[0] == label:
            text = str(row[-1]).replace(",", "")
            return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text)]
    return []


def node_version() -> str | None:
    """``node --version``, or None without Node."""
    node = shutil.which("node")
    if node is None:
        return None
    done = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


def machine_info() -> dict[str, str]:
    """CPU model, cores, OS, Python and package versions, as label -> text."""
    cpu = platform.processor() or "unknown"
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                cpu = row.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = []
    for name in (*PACKAGES, "attrs", "cattrs", "sqlite3"):
        if name == "sqlite3":
            import sqlite3

            versions.append(f"SQLite {sqlite3.sqlite_version}")
            continue
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    installed = SCRATCH / "eventsource" / "node_modules" / "eventsource" / "package.json"
    if installed.exists():
        npm_version = json.loads(installed.read_text())["version"]
        versions.append(f"eventsource {npm_version} (npm, in bench-scratch/)")
    return {
        "CPU": f"{cpu} ({os.cpu_count()} logical CPUs, {usable} usable)",
        "OS": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "Node": node_version() or "not found",
        "Packages": ", ".join(versions),
    }


# --- the Node peer ---------------------------------------------------------------------------

#: The newest ``eventsource`` release that runs on Node 20 (5.x needs Node >= 22.12).
EVENTSOURCE_VERSION = "4.1.1"


def ensure_eventsource() -> tuple[Path | None, str]:
    """Install ``eventsource`` into ``bench-scratch/`` (git-ignored) unless it is there.

    Returns:
        ``(folder holding node_modules, version)``, or ``(None, why it cannot be done)``.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None, "node/npm not found on PATH"
    version = node_version() or "?"
    if not version.startswith("v") or int(version[1:].split(".")[0]) < 20:
        return None, f"eventsource {EVENTSOURCE_VERSION} needs Node >= 20, found {version}"
    target = SCRATCH / "eventsource"
    installed = target / "node_modules" / "eventsource" / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == EVENTSOURCE_VERSION:
        return target, EVENTSOURCE_VERSION
    target.mkdir(parents=True, exist_ok=True)
    (target / "package.json").write_text('{"private": true}\n')
    try:
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", f"eventsource@{EVENTSOURCE_VERSION}"],
            cwd=target,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, "npm install timed out after 180 s (no network?)"
    if done.returncode != 0 or not installed.exists():
        lines = (done.stderr or done.stdout).strip().splitlines()
        return None, "npm install failed: " + (lines[-1] if lines else f"exit {done.returncode}")
    return target, EVENTSOURCE_VERSION
