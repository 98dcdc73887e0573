"""What one of several worker processes gets of the gateway's limits (`SMSGW_WORKERS`).

The workers share the listener and the store; the limits an operator or a merchant was
promised are divided so that together the workers keep them: SMPP binds (and with them the
binds' TPS), the simulator's TPS, each app's TPS; and so are the gateway's own limits on
connections and failed authentications. One worker is the whole gateway
(`ALONE`), so a single process is unchanged.
"""

from __future__ import annotations

import attrs

from smsgw.config import Config, Endpoint


@attrs.frozen
class Share:
    index: int  # 0-based
    count: int

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"worker {self.index} of {self.count}")

    @property
    def name(self) -> str:
        return f"worker {self.index + 1}"

    @property
    def first(self) -> bool:
        """The one worker that runs what must run once (receipt pushes, retention)."""
        return self.index == 0

    def of(self, total: int) -> int:
        """This worker's part of `total` whole things: 3 among 2 workers is 2 and 1."""
        return total // self.count + (1 if self.index < total % self.count else 0)

    def rate(self, total: float) -> float:
        return total / self.count


ALONE = Share(0, 1)


def worker_config(config: Config, share: Share, port: int) -> Config:
    """A worker's configuration: the listener's port fixed by the supervisor (so a port 0
    is the same one for all), no metrics endpoint of its own (the supervisor serves the
    gateway's), its share of each app's TPS, of the connections and of the failed
    authentications allowed (the kernel spreads connections evenly, an address's too)."""
    apps = tuple(
        attrs.evolve(app, tps=share.rate(app.tps)) if app.tps else app for app in config.apps
    )
    return attrs.evolve(
        config,
        listen=Endpoint(config.listen.host, port),
        metrics=None,
        apps=apps,
        max_connections=max(1, share.of(config.max_connections)),
        max_connections_per_address=max(1, share.of(config.max_connections_per_address)),
        auth_fail_limit=max(1, share.of(config.auth_fail_limit)),
        auth_fail_app_limit=max(1, share.of(config.auth_fail_app_limit)),
    )
