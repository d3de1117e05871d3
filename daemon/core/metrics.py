"""Optional Prometheus endpoint (``metrics.port``; ``pip install "gsv-edge[metrics]"``).

Everything is derived from the request events the daemon already emits, so the numbers a scraper sees
and the events a client sees cannot disagree. The registry is private to the daemon instance and the
server binds ``metrics.host`` (127.0.0.1 unless configured otherwise): the counters reveal traffic
patterns, so exposing them is a deliberate choice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from daemon.config import ConfigError, MetricsSettings
from daemon.core.events import Event, EventKind, is_terminal
from daemon.core.request_queue import Request

log = logging.getLogger(__name__)

OUTCOMES = ("done", "failed", "expired", "rejected")
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)


class Metrics:
    """The daemon's counters, gauges and histograms, fed by :meth:`observe`."""

    def __init__(
        self,
        queue_depth: Callable[[], float],
        broker_connected: Callable[[], float],
        state_errors: Callable[[], float],
    ) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as exc:
            raise ConfigError(
                f'metrics.port needs prometheus_client ({exc}); install it with pip install "gsv-edge[metrics]"'
            ) from exc
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gsv_edge_requests", "Requests by outcome", ["outcome", "protocol"], registry=r)
        self.queue_wait = Histogram(
            "gsv_edge_queue_wait_seconds", "Time from receipt to synthesis start", buckets=LATENCY_BUCKETS, registry=r
        )
        self.first_audio = Histogram(
            "gsv_edge_first_audio_seconds", "Time from receipt to first audio", buckets=LATENCY_BUCKETS, registry=r
        )
        self.rtf = Histogram(
            "gsv_edge_real_time_factor", "Synthesis time / audio time per request", buckets=RTF_BUCKETS, registry=r
        )
        self.engine_errors = Counter(
            "gsv_edge_engine_errors", "Requests the configured engine failed (fallback used or failed)", registry=r
        )
        self.audio_errors = Counter("gsv_edge_audio_device_errors", "Audio device errors (each retry)", registry=r)
        self.reloads = Counter("gsv_edge_reloads", "Config/bundle reloads by result", ["result"], registry=r)
        Gauge("gsv_edge_queue_depth", "Requests waiting", registry=r).set_function(queue_depth)
        Gauge("gsv_edge_broker_connected", "1 while connected to the MQTT broker", registry=r).set_function(
            broker_connected
        )
        Gauge(
            "gsv_edge_state_db_write_errors", "Failed writes to the state database since start (disk full?)", registry=r
        ).set_function(state_errors)
        for outcome in OUTCOMES:
            self.requests.labels(outcome, "native")
        self._server: Any = None

    def on_event(self, event: Event) -> None:
        if event.refused is not None:
            self.rejected(event.refused.protocol)
        if event.kind in (EventKind.RELOADED, EventKind.RELOAD_REFUSED):
            self.reloads.labels("ok" if event.kind is EventKind.RELOADED else "refused").inc()
        if event.request is not None:
            self._request_event(event.request, event.kind, event.fields)

    def _request_event(self, request: Request, kind: EventKind, fields: dict[str, Any]) -> None:
        if kind is EventKind.STARTED and "wait_ms" in fields:
            self.queue_wait.observe(fields["wait_ms"] / 1000)
        elif kind is EventKind.FIRST_AUDIO and "latency_ms" in fields:
            self.first_audio.observe(fields["latency_ms"] / 1000)
        elif kind is EventKind.FAILED and fields.get("retrying"):
            self.audio_errors.inc()
        if kind is EventKind.QUEUED or not is_terminal(kind, fields):
            return
        self.requests.labels(kind.value, request.source).inc()
        if kind is EventKind.DONE and fields.get("rtf") is not None:
            self.rtf.observe(fields["rtf"])
        if fields.get("fallback") or str(fields.get("reason", "")).startswith("synthesis failed"):
            self.engine_errors.inc()

    def rejected(self, protocol: str) -> None:
        self.requests.labels("rejected", protocol).inc()

    def serve(self, settings: MetricsSettings) -> None:
        from prometheus_client import start_http_server

        assert settings.port is not None
        self._server, _thread = start_http_server(settings.port, settings.host, registry=self.registry)
        log.info("Prometheus metrics on http://%s:%d/metrics", settings.host, settings.port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
