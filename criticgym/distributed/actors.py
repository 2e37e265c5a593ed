"""Ray, for rollout workers and critic pools (``pip install criticgym[ray]``).

One place starts or joins the cluster and runs a call on an actor that may die: a dead actor is rebuilt from the
same arguments and the call is made again on the new one. That is safe only for calls whose result depends on
their arguments alone (a rollout shard given its weights and seed, a critique of given texts), which is all that
criticgym sends to actors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from criticgym.errors import ConfigError, CriticGymError, require


def ray_module():
    """The ``ray`` module, or an error that names the install."""
    return require("ray", "criticgym[ray]", "rollout workers and critic pools")


def init_ray(address: str | None = None) -> Any:
    """Join the cluster at ``address``, or start a local one (no-op when Ray is already up); returns ``ray``."""
    ray = ray_module()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as error:
            raise ConfigError(
                f"--ray-address {address}: no Ray cluster answers there ({str(error).splitlines()[0]}). Start one "
                "with `ray start --head` (then --ray-address auto), give the address `ray status` prints, or drop "
                "--ray-address to start a local cluster."
            ) from None
    return ray


class Actors:
    """Ray actors of one class, each built from its own arguments, replaced when they die.

    Args:
        cls: the actor's class (a plain class; it is wrapped with ``ray.remote`` here).
        args: one tuple of constructor arguments per actor.
        restarts: how many times in all a dead actor may be replaced before the error is raised.
        options: ``ray.remote`` options of every actor (``num_cpus``, ``num_gpus``, ...).
    """

    def __init__(self, cls: type, args: list[tuple], restarts: int = 3, **options: Any) -> None:
        self.ray = ray_module()
        self.remote = self.ray.remote(cls).options(**options)
        self.args = args
        self.handles = [self.remote.remote(*a) for a in args]
        self.restarts_left = restarts
        self.replaced = 0  # actors replaced so far

    def __len__(self) -> int:
        return len(self.handles)

    def map(self, call: Callable[[Any, int], Any], count: int | None = None) -> list[Any]:
        """``call(handle, i)`` on the first ``count`` actors (all by default) at once; their results, in order.

        ``call`` returns the object ref of a remote call. An actor that died before or during its call is replaced
        and called again.
        """
        futures = [call(handle, i) for i, handle in enumerate(self.handles[:count])]
        results = []
        for i, future in enumerate(futures):
            while True:
                try:
                    results.append(self.ray.get(future))
                    break
                except self.ray.exceptions.RayActorError as exc:
                    if self.restarts_left <= 0:
                        raise CriticGymError(f"Ray actor {i} died and no restarts are left: {exc}") from exc
                    self.restarts_left -= 1
                    self.replaced += 1
                    self.handles[i] = self.remote.remote(*self.args[i])
                    future = call(self.handles[i], i)
        return results

    def close(self) -> None:
        """Kill every actor."""
        for handle in self.handles:
            self.ray.kill(handle)
