"""Kill a Ray actor and wait until it is dead (the ``cluster`` fixture is in conftest.py)."""

from __future__ import annotations

import time

import pytest

ray = pytest.importorskip("ray")


def kill(handle, seconds: float = 30.0) -> None:
    """Kill an actor and wait until it is dead: ``ray.kill`` only sends the order, and a call made before it lands
    is still answered by the old actor."""
    ray.kill(handle)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ray.get(handle.__ray_ready__.remote(), timeout=seconds)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError(f"the actor was still alive {seconds} s after ray.kill")
