"""What `smsgw serve` prints once it listens: one function, so every part of the gateway that
adds a line to it (workers, metrics, TLS) adds it here. Never a secret: carrier passwords are
masked, apps show their id, receipt endpoint and networks only (the demo app's well-known
credentials excepted)."""

from __future__ import annotations

from smsgw import __version__
from smsgw.config import DEMO_APPID, DEMO_SECRET, AppConfig, Config, redact_url
from smsgw.gateway import GatewayInfo


def banner(config: Config, info: GatewayInfo) -> str:
    """The start-up banner, one line per fact, each ending in a newline."""
    where = ", ".join(str(endpoint) for endpoint in info.listen)
    tls = " (TLS)" if config.tls_cert else ""
    workers = config.workers
    processes = f"{workers} worker{'s' if workers > 1 else ''}"
    lines = [
        f"smsgw {__version__} listening on {where}{tls} ({processes})",
        f"  store: {redact_url(config.db_url)}",
        f"  carrier: {redact_url(config.carrier_url)}",
    ]
    if info.metrics is not None:
        lines.append(f"  metrics: http://{info.metrics}/metrics and /healthz")
    if config.demo:
        lines.append(
            f"  demo app: appid={DEMO_APPID} secret={DEMO_SECRET} "
            "(loopback only; set SMSGW_APPS or SMSGW_APPS_FILE for real apps)"
        )
    else:
        lines.extend(f"  app {_app(app)}" for app in config.apps)
    return "".join(f"{line}\n" for line in lines)


def _app(app: AppConfig) -> str:
    receipts = f"receipts to {app.receipt_endpoint}" if app.receipt_endpoint else "no receipts"
    if app.receipt_endpoint and app.status_reports:
        receipts += " (and A003 status reports)"
    sources = ", ".join(str(network) for network in app.networks) or "any address"
    facts = [receipts, f"from {sources}"]
    if app.tps is not None:
        facts.append(f"{app.tps:g} msg/s")
    if app.keep_alive:
        facts.append("keep-alive")
    return f"{app.appid}: {', '.join(facts)}"
