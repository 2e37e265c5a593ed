"""Starting a real OpenAI-compatible server for the opt-in server suites (llama.cpp, vLLM)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(command: list[str], url: str, log: Path, seconds: float, env=None) -> subprocess.Popen:
    """Run ``command`` with its output in ``log`` (a file: a pipe would fill and block it) until ``url`` answers."""
    import httpx

    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[2]} exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=1.0).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{command[2]} did not answer within {seconds:.0f} s: {log.read_text()[-3000:]}")
