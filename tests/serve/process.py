"""`unimp serve` as a child process on 127.0.0.1 (a free port), for the tests that need a real one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

READY = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


class ServerProcess:
    """Start with `start()`; `lines` collects its stderr; `stop()` sends SIGTERM and waits."""

    def __init__(self, run: Path, *args: str):
        self.cmd = [sys.executable, "-m", "unimp_cli", "serve", "--run", str(run), "--port", "0", *args]
        self.lines: list[str] = []
        self.url: str | None = None
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300) -> "ServerProcess":
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("unimp serve exited: " + "".join(self.lines[-5:]))
            if self.url and any(" ready: " in line for line in self.lines):
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError("unimp serve did not get ready")

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            m = READY.search(line)
            if m:
                self.url = m.group(1)

    def stop(self, timeout: float = 60) -> int:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc is not None else 0

    def access_lines(self) -> list[str]:
        return [line for line in self.lines if "aiohttp.access" in line]
