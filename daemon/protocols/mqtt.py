"""The daemon on MQTT (paho-mqtt 2.x): native API (with voice registration and schedules), Hermes TTS and Home
Assistant discovery.

A persistent session (fixed client id, clean_session off) and QoS 1 keep ``say`` requests sent while
the daemon was offline; subscriptions are (re)made in on_connect; paho reconnects with backoff.
The retained availability topic reads ``online`` while connected and, through the last will,
``offline`` when the daemon vanishes. Every publish is QoS 1; the broker's acknowledgement of a message
from the :mod:`~daemon.core.outbox` deletes it there.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from daemon.audio.wav import encode_wav, to_pcm16
from daemon.config import Settings
from daemon.core.events import Event, EventKind, event_payload
from daemon.core.outbox import Message
from daemon.core.outbox import json_bytes as _json
from daemon.core.pipeline import AudioStream
from daemon.core.rate_limit import RateLimiter
from daemon.core.request_queue import Request
from daemon.protocols import topics as t
from daemon.protocols.ha_discovery import discovery_messages
from daemon.protocols.payloads import IntakePolicy, RejectedPayload, parse_hermes, parse_native, refusal
from daemon.speech.synthesizer import VoiceInfo

log = logging.getLogger(__name__)
QOS = 1
QUIET_FOR_STATUS = (EventKind.STARTED, EventKind.FIRST_AUDIO, EventKind.DUPLICATE)  # change no status


class RequestHandler(Protocol):
    """What the MQTT side needs from the rest of the daemon."""

    def submit(self, request: Request) -> None: ...

    def intake_policy(self) -> IntakePolicy: ...

    def voices(self) -> list[VoiceInfo]: ...

    def status(self) -> dict[str, Any]: ...

    def register_voice(self, payload: bytes) -> None:
        """A ``voices/register`` payload; answered later by a ``voice_registered`` or ``rejected`` event."""
        ...

    def schedules(self) -> list[dict[str, Any]]:
        """The schedules as listed (definition, next due time and its run's id), by name."""
        ...

    def change_schedule(self, topic: str, payload: bytes) -> None:
        """A ``schedules/add`` or ``schedules/remove`` payload (``topic`` says which); answered by a
        ``schedule_added``, ``schedule_removed`` or ``rejected`` event."""
        ...

    def rejected(self, protocol: str, topic: str, rejection: RejectedPayload) -> None:
        """A payload refused before it became a request: answered with a ``rejected`` event (and, for Hermes,
        its end), audited and counted like the rest."""
        ...

    def delivered(self, seq: int) -> None:
        """The broker acknowledged outbox message ``seq``: it need not be sent again."""
        ...


def _hermes_end(
    request_id: str | None, site_id: str | None, session_id: str | None, error: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """``hermes/error/tts`` on failure, and ``sayFinished`` always, as Rhasspy's own TTS does."""
    site = site_id or "default"
    finished = (t.HERMES_SAY_FINISHED, {"id": request_id, "siteId": site, "sessionId": session_id})
    if error is None:
        return [finished]
    failed = {"error": error, "siteId": site, "context": request_id, "sessionId": session_id}
    return [(t.HERMES_ERROR, failed), finished]


class _WavStream:
    """Native ``format: wav``: the whole utterance as one WAV on ``audio/<id>``."""

    def __init__(self, service: MqttService, request: Request, sample_rate: int) -> None:
        self._service, self._request, self._rate = service, request, sample_rate
        self._chunks: list[np.ndarray] = []

    def write(self, audio: np.ndarray) -> None:
        self._chunks.append(audio)

    def close(self, cancel: threading.Event) -> None:
        wav = encode_wav(np.concatenate(self._chunks), self._rate)
        self._service.publish(self._service.topics.audio(self._request.id), wav)


class _PcmStream:
    """Native ``format: pcm``: s16le chunks on ``audio/<id>/<n>`` as they come, then ``audio/<id>/end``."""

    def __init__(self, service: MqttService, request: Request, sample_rate: int) -> None:
        self._service, self._request, self._rate = service, request, sample_rate
        self._count = 0
        self._samples = 0

    def write(self, audio: np.ndarray) -> None:
        self._service.publish(self._service.topics.audio_chunk(self._request.id, self._count), to_pcm16(audio))
        self._count += 1
        self._samples += audio.size

    def close(self, cancel: threading.Event) -> None:
        end = {
            "id": self._request.id,
            "chunks": self._count,
            "samples": self._samples,
            "sample_rate": self._rate,
            "channels": 1,
            "sample_format": "s16le",
        }
        self._service.publish(self._service.topics.audio_end(self._request.id), _json(end))


class _PlayBytesStream(_WavStream):
    """Hermes: one WAV to the site's audio server, then wait for its playFinished (or the audio's length)."""

    def close(self, cancel: threading.Event) -> None:
        audio = np.concatenate(self._chunks)
        site = self._request.site_id or "default"
        with self._service.awaiting_playback(self._request.id) as finished:
            self._service.publish(t.hermes_play_bytes(site, self._request.id), encode_wav(audio, self._rate))
            deadline = audio.size / self._rate + self._service.settings.hermes.play_finished_margin_s
            _wait_any((finished, cancel), deadline)


class _ZoneStream(_WavStream):
    """A zone's networked player: the whole announcement as one WAV on the zone's own topic."""

    def __init__(self, service: MqttService, topic: str, request: Request, sample_rate: int) -> None:
        super().__init__(service, request, sample_rate)
        self._topic = topic

    def close(self, cancel: threading.Event) -> None:
        self._service.publish(self._topic, encode_wav(np.concatenate(self._chunks), self._rate))


class ZonePublisher:
    """The :class:`~daemon.core.pipeline.AudioPublisher` of a ``[[zones]]`` entry with a ``topic``."""

    def __init__(self, service: MqttService, topic: str) -> None:
        self._service, self._topic = service, topic

    def open(self, request: Request, sample_rate: int) -> AudioStream:
        return _ZoneStream(self._service, self._topic, request, sample_rate)


def _wait_any(events: tuple[threading.Event, ...], timeout: float) -> None:
    """Wait until one of the events is set or the timeout passes (events cannot be selected on)."""
    deadline = time.monotonic() + timeout
    while not any(e.is_set() for e in events) and (left := deadline - time.monotonic()) > 0:
        events[0].wait(min(0.05, left))


class MqttService:
    def __init__(self, settings: Settings, handler: RequestHandler, version: str) -> None:
        self.settings = settings
        self.topics = t.Topics(settings.mqtt)
        self._handler = handler
        self._version = version
        self.ready = threading.Event()  # connected and subscribed
        self._play_waiters: dict[str, threading.Event] = {}
        self._waiters_lock = threading.Lock()
        # Every publish until its PUBACK: mid -> outbox seq (None: not from the outbox). paho may report the
        # PUBACK before publish() has returned the mid, hence the mids acknowledged early.
        self._unacknowledged: dict[int, int | None] = {}
        self._acknowledged_early: set[int] = set()
        self._acks_lock = threading.Lock()
        cfg = settings.mqtt
        self._v5 = bool(cfg.share_group)  # shared subscriptions are MQTT 5
        self._voices_payload: bytes | None = None  # last voices list published, to republish only changes
        self._schedules_payload: bytes | None = None  # likewise the schedule list
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"gsv-edge-{cfg.node_id}",
            clean_session=None if self._v5 else False,  # MQTT 5: clean_start=False at connect instead
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
        )
        if cfg.username:
            self._client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        if cfg.tls_ca_file is not None:
            self._client.tls_set(
                ca_certs=str(cfg.tls_ca_file),
                certfile=str(cfg.tls_cert_file) if cfg.tls_cert_file else None,
                keyfile=str(cfg.tls_key_file) if cfg.tls_key_file else None,
            )
        self._rate = RateLimiter(settings.queue.rate_limit_per_s, settings.queue.rate_limit_burst)
        self._client.will_set(self.topics.availability, "offline", qos=QOS, retain=True)
        self._client.reconnect_delay_set(min_delay=cfg.reconnect_min_s, max_delay=cfg.reconnect_max_s)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = lambda *_: self.ready.set()
        self._routes: dict[str, Callable[[mqtt.MQTTMessage], None]] = {self.topics.say: self._on_native_say}
        self._routes[self.topics.voice_register] = self._on_voice_register
        self._routes[self.topics.schedule_add] = self._on_schedule_change
        self._routes[self.topics.schedule_remove] = self._on_schedule_change
        self._filters: dict[str, str] = {}  # route topic -> the filter subscribed for it, where they differ
        if self.topics.shared_say_filter is not None:
            self._routes[self.topics.shared_say] = self._on_native_say
            self._filters[self.topics.shared_say] = self.topics.shared_say_filter
        if settings.hermes.enabled:
            self._routes[t.HERMES_SAY] = self._on_hermes_say
            self._routes[t.RHASSPY_GET_VOICES] = self._on_get_voices
        if settings.homeassistant.enabled:
            self._routes[settings.homeassistant.status_topic] = self._on_ha_status

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.settings.mqtt
        if self._v5:  # a persistent session, as clean_session=False gives in 3.1.1, kept while offline
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = cfg.session_expiry_s
            self._client.connect_async(
                cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=False, properties=properties
            )
        else:
            self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        self._client.loop_start()  # retries the first connection too

    def leave_share_group(self) -> None:
        """Stop taking fleet requests: the broker would otherwise keep queueing this box's share of them
        in its session while it is down. The next connect subscribes again."""
        if self.topics.shared_say_filter is not None and self._client.is_connected():
            self._client.unsubscribe(self.topics.shared_say_filter)

    def network_alive(self) -> bool:
        """paho's network thread is running (paho has no public handle on it)."""
        thread = self._client._thread
        return thread is not None and thread.is_alive()

    def stop(self) -> None:
        self.leave_share_group()
        if self._client.is_connected():
            self.publish(self.topics.availability, b"offline", retain=True).wait_for_publish(timeout=2)
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            cfg = self.settings.mqtt
            hint = ""
            if reason.value in (4, 5, 134, 135):  # bad user name or password / not authorised (3.1.1, 5)
                hint = f"; check mqtt.username ({cfg.username or 'not set'}) and mqtt.password"
            log.error(
                "MQTT broker %s:%d refused the connection: %s%s; retrying within %.0f s",
                cfg.host, cfg.port, reason, hint, cfg.reconnect_max_s,
            )
            return
        log.info("connected to MQTT broker (session present: %s)", flags.session_present)
        subscriptions = [(self._filters.get(topic, topic), QOS) for topic in self._routes]
        if self.settings.hermes.enabled:
            subscriptions.append((t.HERMES_PLAY_FINISHED, QOS))
        client.subscribe(subscriptions)
        self._announce()

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        cfg = self.settings.mqtt
        tls = " over TLS" if cfg.tls_ca_file else ""
        log.warning("cannot connect to the MQTT broker %s:%d%s; retrying", cfg.host, cfg.port, tls)

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self.ready.clear()
        if reason.is_failure:
            log.warning("lost the MQTT broker (%s); reconnecting", reason)

    def _announce(self) -> None:
        """Everything retained or discovered: sent on connect and when Home Assistant comes back."""
        if self.settings.homeassistant.enabled:
            prefix = self.settings.homeassistant.discovery_prefix
            for topic, config in discovery_messages(self.topics, prefix, self._version):
                self.publish(topic, _json(config), retain=True)
        self.publish(self.topics.availability, b"online", retain=True)
        self.publish_voices()
        self.publish_schedules()
        self.publish_status(self._handler.status())

    # -- outgoing -------------------------------------------------------------------------------

    def publish(
        self, topic: str, payload: bytes, retain: bool = False, seq: int | None = None
    ) -> mqtt.MQTTMessageInfo:
        """Publish at QoS 1 (queued by paho while disconnected); ``seq``: the outbox row it comes from."""
        info = self._client.publish(topic, payload, qos=QOS, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # not queued: no PUBACK will come
            log.warning("cannot publish on %s: %s", topic, mqtt.error_string(info.rc))
            return info
        with self._acks_lock:
            early = info.mid in self._acknowledged_early
            if early:
                self._acknowledged_early.discard(info.mid)
            else:
                self._unacknowledged[info.mid] = seq
        if early and seq is not None:
            self._handler.delivered(seq)
        return info

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, reason: Any, _props: Any) -> None:
        with self._acks_lock:
            if mid not in self._unacknowledged:
                self._acknowledged_early.add(mid)
                return
            seq = self._unacknowledged.pop(mid)
        if reason.is_failure:  # MQTT 5: the broker refused it (not authorised ...); sending it again will not help
            log.warning("the broker refused message %s: %s", mid if seq is None else f"seq {seq}", reason)
        if seq is not None:
            self._handler.delivered(seq)

    def send(self, messages: Iterable[Message]) -> None:
        for message in messages:
            self.publish(message.topic, message.payload, seq=message.seq)

    def publish_status(self, status: dict[str, Any]) -> None:
        self.publish(self.topics.status, _json(status), retain=True)
        self.publish_voices(only_if_changed=True)  # voices added or removed by the CLI meanwhile

    def publish_voices(self, only_if_changed: bool = False) -> None:
        voices = [
            {"name": v.name, "languages": v.languages, "description": v.description} for v in self._handler.voices()
        ]
        payload = _json({"voices": voices})
        if only_if_changed and payload == self._voices_payload:
            return
        self._voices_payload = payload
        self.publish(self.topics.voices, payload, retain=True)

    def publish_schedules(self, only_if_changed: bool = False) -> None:
        """The retained schedule list: at connect, and after every change (over MQTT, HTTP or the command
        line, which the schedule runner notices) and every run (a schedule's next due time moves on)."""
        payload = _json({"schedules": self._handler.schedules()})
        if only_if_changed and payload == self._schedules_payload:
            return
        self._schedules_payload = payload
        self.publish(self.topics.schedules, payload, retain=True)

    def messages(self, event: Event) -> list[tuple[str, dict[str, Any]]]:
        """An event as MQTT messages (topic, JSON body); a Hermes request's end also ends it the Hermes way."""
        messages = [(self.topics.events, event.payload())]
        request, refused = event.request, event.refused
        if request is not None and request.source == "hermes" and event.terminal:
            error = None if event.kind is EventKind.DONE else event.fields.get("reason", event.kind.value)
            messages += _hermes_end(request.id, request.site_id, request.session_id, error)
        elif refused is not None and refused.protocol == "hermes":
            messages += _hermes_end(event.id, refused.site_id, refused.session_id, event.fields.get("reason"))
        return messages

    def announce(self, event: Event, messages: list[Message]) -> None:
        """Publish an event's messages (recorded first: see :class:`~daemon.core.bus.EventBus`), and the
        retained status or voice list it changes."""
        self.send(messages)
        if event.kind is EventKind.VOICE_REGISTERED:
            self.publish_voices(only_if_changed=True)
        elif event.request is not None and event.kind not in QUIET_FOR_STATUS:
            self.publish_status(self._handler.status())

    def _reject(self, source: str, rejection: RejectedPayload) -> None:
        """A payload refused before it became a request. Its answer goes out while the say is being handled,
        before paho acknowledges it: a daemon killed before the broker has the answer gets the say again."""
        log.info("rejected %s say %s: %s", source, rejection.request_id, rejection.reason)
        topic = t.HERMES_SAY if source == "hermes" else self.topics.say
        self._handler.rejected(source, topic, rejection)

    def open(self, request: Request, sample_rate: int) -> AudioStream:
        if request.source == "hermes":
            return _PlayBytesStream(self, request, sample_rate)
        if request.format == "pcm":
            return _PcmStream(self, request, sample_rate)
        return _WavStream(self, request, sample_rate)

    @contextmanager
    def awaiting_playback(self, request_id: str) -> Iterator[threading.Event]:
        """An event that a Hermes ``playFinished`` for ``request_id`` sets while the block runs."""
        finished = threading.Event()
        with self._waiters_lock:
            self._play_waiters[request_id] = finished
        try:
            yield finished
        finally:
            with self._waiters_lock:
                self._play_waiters.pop(request_id, None)

    # -- incoming -------------------------------------------------------------------------------

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            route = self._routes.get(msg.topic)
            say_topics = (self.topics.say, self.topics.shared_say, t.HERMES_SAY)
            if route is not None and msg.topic in say_topics and not self._admissible(msg):
                return
            if route is not None:
                route(msg)
            elif mqtt.topic_matches_sub(t.HERMES_PLAY_FINISHED, msg.topic):
                self._on_play_finished(msg)
        except Exception:  # one bad message must never take the network thread down
            log.exception("error handling a message on %s", msg.topic)

    def _admissible(self, msg: mqtt.MQTTMessage) -> bool:
        """Size and rate limits, checked before a say payload is parsed in full (a refusal by rate only
        reads what names the request, so that whoever waits for it hears of it)."""
        hermes = msg.topic == t.HERMES_SAY
        source = "hermes" if hermes else "native"
        limit = self.settings.queue.max_payload_bytes
        if len(msg.payload) > limit:
            self._reject(source, RejectedPayload(f"payload too large ({len(msg.payload)} > {limit} bytes)"))
            return False
        if not self._rate.allow(msg.topic):
            reason = f"rate limit: more than {self._rate.rate_per_s:g}/s on {msg.topic}"
            rejection = refusal(msg.payload, reason, hermes, self.settings.hermes.site_ids)
            if rejection is not None:  # None: a Hermes say for another site, not ours to answer
                self._reject(source, rejection)
            return False
        return True

    def _on_native_say(self, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            self._reject("native", RejectedPayload("retained say messages are ignored"))
            return
        try:
            request = parse_native(msg.payload, self._handler.intake_policy())
        except RejectedPayload as rejection:
            self._reject("native", rejection)
            return
        request.topic = msg.topic
        self._handler.submit(request)

    def _on_voice_register(self, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:  # would register again on every reconnect
            reason = "retained voice registrations are ignored"
            self.publish(self.topics.events, _json(event_payload(None, EventKind.REJECTED, reason=reason)))
            return
        self._handler.register_voice(msg.payload)

    def _on_schedule_change(self, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:  # would add or remove again on every reconnect
            reason = "retained schedule changes are ignored"
            self.publish(self.topics.events, _json(event_payload(None, EventKind.REJECTED, reason=reason)))
            return
        self._handler.change_schedule(msg.topic, msg.payload)

    def _on_hermes_say(self, msg: mqtt.MQTTMessage) -> None:
        hermes = self.settings.hermes
        try:
            request = parse_hermes(msg.payload, self._handler.intake_policy(), hermes.site_ids, hermes.priority)
        except RejectedPayload as rejection:
            self._reject("hermes", rejection)
            return
        if request is not None:
            request.topic = msg.topic
            self._handler.submit(request)

    def _on_get_voices(self, msg: mqtt.MQTTMessage) -> None:
        try:
            data = json.loads(msg.payload or b"{}")
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        site = data.get("siteId", "default")
        site_ids = self.settings.hermes.site_ids
        if site_ids and site not in site_ids:
            return
        voices = [{"voiceId": v.name, "description": v.description} for v in self._handler.voices()]
        self.publish(t.RHASSPY_VOICES, _json({"voices": voices, "id": data.get("id"), "siteId": site}))

    def _on_play_finished(self, msg: mqtt.MQTTMessage) -> None:
        # rhasspy_mobile sends an empty payload: then only the timeout ends the wait.
        try:
            request_id = json.loads(msg.payload).get("id")
        except (ValueError, AttributeError):
            return
        with self._waiters_lock:
            waiter = self._play_waiters.get(request_id) if isinstance(request_id, str) else None
        if waiter is not None:
            waiter.set()

    def _on_ha_status(self, msg: mqtt.MQTTMessage) -> None:
        if msg.payload.strip() == b"online":
            log.info("Home Assistant is online: republishing discovery")
            self._announce()
