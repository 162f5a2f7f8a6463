"""The embedded database: SecantusDB run as a supervised child process.

SecantusDB is GPL-2.0, so it is never imported here: it runs as its own process
(``python -m secantus``) on a loopback port, with its data under ``DATA_DIR/db``, and
the appliance talks to it over the MongoDB wire protocol with plain pymongo.
"""
from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger("mailappliance.embedded")

_LISTENING = re.compile(r"listening on ([0-9.]+):(\d+)")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the appliance dies, even by SIGKILL,
    so a crashed appliance never leaves a server holding the data directory."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: rely on a clean shutdown
        pass


class EmbeddedDatabaseError(RuntimeError):
    """The embedded server could not be started."""


class EmbeddedDatabase:
    """Start, watch and stop one SecantusDB process.

    If the child dies while the appliance runs, it is restarted on the same port (so
    the pymongo client reconnects by itself) with a growing pause between attempts.
    """

    def __init__(self, data_dir: Path, cache_size: str = "256M", python: str = sys.executable) -> None:
        self.data_dir = Path(data_dir)
        self.storage_path = self.data_dir / "db"
        self.cache_size = cache_size
        self.python = python
        self.port: Optional[int] = None
        self._process: Optional[subprocess.Popen] = None
        self._stopping = False
        self._watcher: Optional[threading.Thread] = None
        self._log_path = self.data_dir / "db.log"

    @property
    def url(self) -> str:
        assert self.port is not None, "start() first"
        # journal=true: an acknowledged write survives a crash (see shared/embedded-db.md);
        # retryWrites=false: retryable writes slow every write down on this server.
        return (
            f"mongodb://127.0.0.1:{self.port}/mailappliance"
            "?directConnection=true&journal=true&retryWrites=false"
        )

    def start(self) -> None:
        self.storage_path.mkdir(parents=True, exist_ok=True)
        self._spawn(self.port or 0)
        self._watcher = threading.Thread(target=self._watch, name="embedded-db-watch", daemon=True)
        self._watcher.start()

    def _spawn(self, port: int) -> None:
        config = self.data_dir / "secantusd.toml"
        if not config.exists():
            config.write_text("# empty: stops SecantusDB from reading a config file elsewhere\n")
        command = [
            self.python, "-m", "secantus",
            "--config", str(config),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--storage-path", str(self.storage_path),
            "--cache-size", self.cache_size,
            "--log-level", "INFO",  # the "listening on" line is logged at INFO
        ]
        log_file = open(self._log_path, "ab")
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C at the terminal goes to the appliance only
            preexec_fn=_die_with_parent,
        )
        log_file.close()
        deadline = time.monotonic() + START_TIMEOUT
        lines: list[str] = []
        assert process.stderr is not None
        while time.monotonic() < deadline:
            raw = process.stderr.readline()
            if not raw:
                break
            line = raw.decode("utf-8", "replace").rstrip()
            lines.append(line)
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(2))
                self._process = process
                threading.Thread(target=self._drain, args=(process,), daemon=True).start()
                log.info("embedded database listening on 127.0.0.1:%d, data in %s", self.port, self.storage_path)
                return
        process.kill()
        process.wait()
        reason = next((l for l in reversed(lines) if "Error" in l or "error" in l), lines[-1] if lines else "no output")
        if "busy" in reason.lower():
            reason = f"{self.storage_path} is in use by another running appliance ({reason})"
        raise EmbeddedDatabaseError(f"embedded database did not start: {reason}")

    def _drain(self, process: subprocess.Popen) -> None:
        """Copy the child's stderr to its log file so the pipe never fills."""
        assert process.stderr is not None
        with open(self._log_path, "ab") as out:
            for raw in process.stderr:
                out.write(raw)
                out.flush()

    def _watch(self) -> None:
        delay = 1.0
        while not self._stopping:
            process = self._process
            if process is None:
                return
            code = process.wait()
            if self._stopping:
                return
            log.error("embedded database exited with code %s; restarting in %.0f s", code, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
            try:
                self._spawn(self.port or 0)
                delay = 1.0
            except EmbeddedDatabaseError as exc:
                log.error("%s", exc)

    def stop(self) -> None:
        """SIGTERM: the server checkpoints and exits (2-4 s); SIGKILL only as a last resort."""
        self._stopping = True
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.error("embedded database did not stop in %.0f s; killing it", STOP_TIMEOUT)
            process.kill()
            process.wait()
        log.info("embedded database stopped")

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process else None
