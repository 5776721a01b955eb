"""Headless Chromium driven through the DevTools protocol over --remote-debugging-pipe: JSON messages,
each ended by a NUL byte, on the browser's file descriptors 3 (commands in) and 4 (answers out). No
websocket, no port, nothing but the standard library."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1400,1000"]


def missing() -> str | None:
    """Why Chromium cannot run here, or None."""
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        return f"{CHROMIUM} is not installed (Debian: apt-get install chromium)"
    return None


class Browser:
    """One headless Chromium with a fresh profile under ``folder``; a page opened with ``open``."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        to_child, self._to_browser = os.pipe()
        self._from_browser, from_child = os.pipe()
        # The browser must find them as fds 3 and 4: move them above those first, so dup2 clobbers nothing.
        to_child, from_child = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child, from_child))

        def child_fds() -> None:  # dup2 makes them inheritable; Python's own fds are not, so none leaks
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        binary = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
        self.log = open(folder / "chromium.log", "wb")
        self.proc = subprocess.Popen([binary, *FLAGS, "--remote-debugging-pipe",
                                      f"--user-data-dir={folder / 'profile'}", "about:blank"],
                                     stdout=self.log, stderr=subprocess.STDOUT, close_fds=False,
                                     preexec_fn=child_fds)
        for fd in (to_child, from_child):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None

    def send(self, method: str, params: dict | None = None, *, session: bool = True,
             timeout: float = 30) -> dict:
        """One command; its result (raises on the browser's error or on no answer within ``timeout``)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self._next_id:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    return answer["result"]
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise TimeoutError(f"{method}: no answer from Chromium (exit code {self.proc.poll()})")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise TimeoutError(f"{method}: Chromium closed its pipe (exit code {self.proc.poll()})")
                self._buffer += chunk

    def open(self, url: str) -> None:
        """A new tab at ``url``; later commands go to it."""
        target = self.send("Target.createTarget", {"url": url}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        answer = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in answer:
            raise RuntimeError(f"JavaScript failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False, timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        self.log.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
