"""The daemon's whole configuration: one pydantic-settings model.

Values come from a TOML file (default ``/etc/gsv-edge/config.toml``) and are overridden by
``GSV_EDGE_<SECTION>__<KEY>`` environment variables. Any bad value stops start-up with a
:class:`ConfigError` naming the key, so a typo never silently becomes a default. The settings remember where
each key's value came from (:meth:`Settings.effective`), for the console's settings page.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from daemon.vocabulary import MAX_BATCH, Priority

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 on JetPack 6
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("/etc/gsv-edge/config.toml")
ENV_PREFIX = "GSV_EDGE_"

_NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SECRET_WORDS = ("password", "secret", "token")  # a key with one of these words never shows its value
MASKED = "********"
Source = Literal["environment", "file", "given", "default"]


class ConfigError(Exception):
    """Configuration that must not be run; the message names the offending key(s)."""


def default_state_dir() -> Path:
    """Voices and caches: the system directory for root (systemd's StateDirectory), else per user."""
    if os.geteuid() == 0:
        return Path("/var/lib/gsv-edge")
    return Path.home() / ".local" / "state" / "gsv-edge"


def default_node_id() -> str:
    """The host name, reduced to the characters Home Assistant allows in ids."""
    host = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]", "-", host)[:64] or "gsv-edge"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _empty_is_none(value: Any) -> Any:
    """An empty string in the file or the environment means "unset" for an optional key."""
    return None if value == "" else value


def _tls_pair(cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        raise ValueError("tls_cert_file and tls_key_file go together")


class MqttSettings(_Section):
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = "gsv-edge"
    node_id: str = Field(default_factory=default_node_id)
    client_id: str | None = None  # default: gsv-edge-<node_id>; fixed so the broker keeps our session
    username: str | None = None
    password: SecretStr | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(60.0, gt=0)
    tls_ca_file: Path | None = None  # CA of the broker's certificate; set = TLS on (use port 8883)
    tls_cert_file: Path | None = None  # client certificate, for brokers that require one (with tls_key_file)
    tls_key_file: Path | None = None
    # MQTT 5 shared subscription $share/<group>/<prefix>/say: each request there is taken by one box of the
    # group. Empty = off (MQTT 3.1.1). <prefix>/<node_id>/say still addresses this box alone.
    share_group: str = ""
    session_expiry_s: int = Field(3600, ge=0)  # MQTT 5 only: how long the broker keeps our session while offline

    @field_validator("share_group")
    @classmethod
    def _share_group(cls, value: str) -> str:
        if any(c in value for c in "/+#\0"):
            raise ValueError("must not contain '/', '+', '#' or NUL")
        return value

    @field_validator("prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        if not value or value.startswith("/") or value.endswith("/") or any(c in value for c in "+#\0"):
            raise ValueError("must be a non-empty topic without '+', '#', NUL or leading/trailing '/'")
        return value

    _unset = field_validator("tls_ca_file", "tls_cert_file", "tls_key_file", mode="before")(_empty_is_none)

    @model_validator(mode="after")
    def _tls_files(self) -> MqttSettings:
        _tls_pair(self.tls_cert_file, self.tls_key_file)
        if self.tls_cert_file is not None and self.tls_ca_file is None:
            raise ValueError("a client certificate needs tls_ca_file (TLS is on only with tls_ca_file)")
        for path in (self.tls_ca_file, self.tls_cert_file, self.tls_key_file):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} not found")
        return self

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not _NODE_ID.fullmatch(value):
            raise ValueError("must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
        return value


class EngineSettings(_Section):
    bundle: Path | None = None  # GPT-SoVITS ONNX bundle; empty = eSpeak NG fallback only
    hardware_profile: str = "x86-cpu"  # a profile name or a path: providers and precision
    # NAME.toml here is found by name and wins over the shipped profile of that name
    hardware_profile_dir: Path = Path("/etc/gsv-edge/hardware")
    g2pw_model: Path | None = None  # optional user-supplied G2PWModel directory for Chinese polyphones
    lexicon: Path | None = None  # user pronunciations (JSON or TSV: word -> phones / pinyin), override built-ins
    # > 0: vocode in chunks of up to N semantic tokens (25 = 1 s of speech; the first is a quarter) for
    # earlier first audio; 0 = whole segments
    stream_chunk_tokens: int = Field(0, ge=0, le=500)
    # sequences decoded in one T2S step (the sentences of one announcement); none = the hardware profile's
    max_batch: int | None = Field(None, ge=1, le=MAX_BATCH)

    @field_validator("stream_chunk_tokens")
    @classmethod
    def _chunk(cls, value: int) -> int:
        if 0 < value < 8:
            raise ValueError("must be 0 (whole segments) or at least 8 tokens")
        return value
    # registered voice for requests that name none (checked at start-up); none = the first registered, by name
    default_voice: str | None = None
    fallback_voice: str = "en"  # eSpeak NG voice when a request's lang has none

    _unset = field_validator("bundle", "default_voice", mode="before")(_empty_is_none)

    @field_validator("default_voice")
    @classmethod
    def _default_voice_needs_a_bundle(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("bundle") is None:
            raise ValueError("names a voice registered for a bundle: set engine.bundle too (without one the "
                             "eSpeak NG fallback speaks, with engine.fallback_voice)")
        return value


class AudioSettings(_Section):
    output_device: str | None = None  # sounddevice output by name; none = publish audio over MQTT
    sample_rate: int | None = Field(None, ge=8000, le=192000)  # none = voice rate if the device takes it
    lead_in_ms: int = Field(150, ge=0, le=5000)  # wakes amplifiers before the first word
    tail_ms: int = Field(150, ge=0, le=5000)
    fade_ms: int = Field(20, ge=1, le=500)  # fade on interruption: a cut without a click
    volume: float = Field(1.0, ge=0.0, le=2.0)
    chime_file: Path | None = None  # 16-bit WAV; none = a built-in two-tone chime
    chime_default: bool = False
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(10.0, gt=0)

    _unset = field_validator("output_device", "chime_file", mode="before")(_empty_is_none)


class QueueSettings(_Section):
    max_depth: int = Field(32, ge=1, le=10000)
    dedup_window_s: float = Field(600.0, ge=0)
    default_ttl_s: float = Field(300.0, gt=0)  # stale requests replayed by the broker after an outage die
    max_text_chars: int = Field(2000, ge=1, le=100000)
    max_payload_bytes: int = Field(65536, ge=256, le=16 * 1024 * 1024)  # larger say payloads are refused unread
    rate_limit_per_s: float = Field(10.0, gt=0)  # say requests per second per topic, sustained
    rate_limit_burst: int = Field(50, ge=1)  # ... and in a burst
    drain_s: float = Field(10.0, ge=0, le=600)  # on SIGTERM: time the announcement in progress gets to play out


class HermesSettings(_Section):
    enabled: bool = True
    site_ids: list[str] = Field(default_factory=list)  # empty = serve every site
    priority: Priority = "normal"
    play_finished_margin_s: float = Field(0.5, ge=0)  # wait for playFinished: audio length + this


class HomeAssistantSettings(_Section):
    enabled: bool = True
    discovery_prefix: str = "homeassistant"
    status_topic: str = "homeassistant/status"


class AuditSettings(_Section):
    store_text: bool = False  # keep the spoken text itself, not only its SHA-256
    max_rows: int = Field(100_000, ge=100)
    max_age_days: float = Field(90.0, gt=0)


class MetricsSettings(_Section):
    port: int | None = Field(None, ge=1, le=65535)  # none = no Prometheus endpoint
    host: str = "127.0.0.1"  # scrapers elsewhere need an address they can reach; think before using 0.0.0.0


class WyomingSettings(_Section):
    """The Wyoming TTS server Home Assistant talks to; off until ``uri`` is set."""

    uri: str | None = None  # tcp://0.0.0.0:10200 or unix:///run/gsv-edge/wyoming.sock
    priority: Priority = "normal"  # in the shared queue, beside MQTT requests
    samples_per_chunk: int = Field(1024, ge=64, le=65536)  # per audio-chunk event
    sentence_silence_s: float = Field(0.0, ge=0.0, le=5.0)  # added after each sentence's audio
    max_connections: int = Field(8, ge=1, le=1024)
    zeroconf: bool = False  # announce _wyoming._tcp on the LAN (needs gsv-edge[zeroconf] and a tcp:// uri)

    _unset = field_validator("uri", mode="before")(_empty_is_none)

    @field_validator("uri")
    @classmethod
    def _server_uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme == "tcp":
            try:
                port = parsed.port
            except ValueError:
                port = None
            if not parsed.hostname or not port:
                raise ValueError("a tcp:// uri needs a host and a port, e.g. tcp://0.0.0.0:10200")
        elif parsed.scheme == "unix":
            if not parsed.path:
                raise ValueError("a unix:// uri needs a socket path, e.g. unix:///run/gsv-edge/wyoming.sock")
        else:
            raise ValueError("must start with tcp:// or unix://")
        return value

    @model_validator(mode="after")
    def _zeroconf_needs_tcp(self) -> WyomingSettings:
        if self.zeroconf and not (self.uri or "").startswith("tcp://"):
            raise ValueError("zeroconf announces a TCP port: set uri to tcp://HOST:PORT")
        return self


class HttpSettings(_Section):
    """The HTTP API (GPT-SoVITS api_v2, OpenAI speech, native REST); off until ``port`` is set."""

    host: str = "127.0.0.1"  # loopback: only this box; another address needs tokens or allow_anonymous
    port: int | None = Field(None, ge=1, le=65535)  # upstream api_v2 listens on 9880
    tls_cert_file: Path | None = None  # PEM certificate chain; set with tls_key_file = HTTPS
    tls_key_file: Path | None = None
    # requests without a token may speak; without it, a token is needed once any exists, and a non-loopback
    # host with no token at all refuses to start
    allow_anonymous: bool = False
    cors_origins: list[str] = Field(default_factory=list)  # browser origins allowed to call (SillyTavern's)
    reference_dir: Path | None = None  # api_v2 ref_audio_path under here registers a voice on first use
    priority: Priority = "normal"  # in the shared queue, beside MQTT and Wyoming requests
    max_body_bytes: int = Field(16 << 20, ge=1024, le=1 << 30)  # larger requests get 413 unread
    rate_limit_per_s: float = Field(5.0, gt=0)  # requests per second per token (or per address), sustained
    rate_limit_burst: int = Field(20, ge=1)  # ... and in a burst
    # POST /v1/say: a finished request's state and events, and its audio, are kept this long for GET
    # /v1/requests; the kept audio of all requests together within keep_audio_mb (the oldest goes first)
    keep_requests_s: float = Field(600.0, gt=0, le=86400)
    keep_audio_mb: int = Field(64, ge=1, le=4096)
    session_s: float = Field(43200.0, gt=0, le=30 * 86400)  # how long a web console login lasts

    _unset = field_validator("port", "tls_cert_file", "tls_key_file", "reference_dir", mode="before")(_empty_is_none)

    @model_validator(mode="after")
    def _tls_files(self) -> HttpSettings:
        _tls_pair(self.tls_cert_file, self.tls_key_file)
        for path in (self.tls_cert_file, self.tls_key_file):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} not found")
        if self.reference_dir is not None and not self.reference_dir.is_dir():
            raise ValueError(f"reference_dir {self.reference_dir} is not a directory")
        return self

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")


_ZONE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CLOCK_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
ALL_ZONES = "all"  # a say's ``zones`` naming every configured zone; no zone may be called this


def minute_of_day(text: str) -> int:
    """``HH:MM`` (00:00-23:59, the box's local time) as minutes after midnight; ValueError naming the format."""
    match = _CLOCK_TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time of day HH:MM (00:00-23:59)")
    return int(match[1]) * 60 + int(match[2])


class ZoneSettings(_Section):
    """One ``[[zones]]`` entry: a named output, either a sound card or an MQTT topic a networked player hears."""

    name: str
    output_device: str | None = None  # sounddevice output by name, as audio.output_device
    topic: str | None = None  # WAV of each announcement published here, for a player on the network
    volume: float = Field(1.0, ge=0.0, le=2.0)
    lead_in_s: float = Field(0.15, ge=0.0, le=5.0)  # silence before the first word: wakes this zone's amplifier
    # "22:00-07:00" (local time): only high and emergency requests play; the rest wait, or expire by their TTL
    quiet_hours: str | None = None
    # {"07:00" = 0.8, "22:00" = 0.3}: from each local time on, this volume (round the clock); empty: ``volume``
    volume_schedule: dict[str, float] = Field(default_factory=dict)

    _unset = field_validator("output_device", "topic", "quiet_hours", mode="before")(_empty_is_none)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str | None) -> str | None:
        if value is None:
            return None
        start, dash, end = value.partition("-")
        if not dash:
            raise ValueError("must be START-END in local time, e.g. 22:00-07:00")
        if minute_of_day(start.strip()) == minute_of_day(end.strip()):
            raise ValueError("start and end are the same time")
        return value

    @field_validator("volume_schedule")
    @classmethod
    def _volume_schedule(cls, value: dict[str, float]) -> dict[str, float]:
        for moment, volume in value.items():
            minute_of_day(moment)
            if not 0.0 <= volume <= 2.0:
                raise ValueError(f"volume at {moment} must be between 0 and 2, got {volume}")
        return value

    @property
    def quiet_span(self) -> tuple[int, int] | None:
        """Quiet hours as (start, end) minutes after midnight; the end may be the next morning."""
        if self.quiet_hours is None:
            return None
        start, _, end = self.quiet_hours.partition("-")
        return minute_of_day(start.strip()), minute_of_day(end.strip())

    @property
    def volume_steps(self) -> tuple[tuple[int, float], ...]:
        """The volume schedule as (minute after midnight, volume), earliest first."""
        return tuple(sorted((minute_of_day(moment), volume) for moment, volume in self.volume_schedule.items()))

    @field_validator("name")
    @classmethod
    def _zone_name(cls, value: str) -> str:
        if not _ZONE_NAME.fullmatch(value):
            raise ValueError("must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
        if value == ALL_ZONES:
            raise ValueError(f"{ALL_ZONES!r} means every zone in a say; give this zone another name")
        return value

    @field_validator("topic")
    @classmethod
    def _zone_topic(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or value.endswith("/") or any(c in value for c in "+#\0")):
            raise ValueError("must be a topic without '+', '#', NUL or leading/trailing '/'")
        return value

    @model_validator(mode="after")
    def _one_output(self) -> ZoneSettings:
        if (self.output_device is None) == (self.topic is None):
            which = "not both" if self.output_device is not None else "one of them is required"
            raise ValueError(f"zone {self.name!r}: give output_device or topic, {which}")
        return self


class CacheSettings(_Section):
    max_mb: int = Field(256, ge=0)  # rendered-audio cache in <state_dir>/cache/audio; 0 = off
    prerender_s: float = Field(300.0, ge=0, le=86400)  # a schedule's run is rendered this long before it is due


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    hermes: HermesSettings = Field(default_factory=HermesSettings)
    homeassistant: HomeAssistantSettings = Field(default_factory=HomeAssistantSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    wyoming: WyomingSettings = Field(default_factory=WyomingSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    zones: list[ZoneSettings] = Field(default_factory=list)  # [[zones]]: none = one output, the [audio] device
    state_dir: Path = Field(default_factory=lambda: default_state_dir())
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, zones: list[ZoneSettings]) -> list[ZoneSettings]:
        names = [zone.name for zone in zones]
        if duplicate := next((name for name in names if names.count(name) > 1), None):
            raise ValueError(f"zone {duplicate!r} is defined twice: each [[zones]] name must be unique")
        return zones

    # Where each value that is no default came from, by dotted key (``http.port``): the environment's variables
    # the model read, and the values it was given (the TOML file's, when load_settings read one: _file names it).
    _sources: dict[str, Source] = PrivateAttr(default_factory=dict)
    _file: Path | None = PrivateAttr(None)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        environment = _dotted(EnvSettingsSource(type(self))())
        self._sources = {key: "environment" if key in environment else "given"
                         for key in environment | _dotted(values)}

    @property
    def config_file(self) -> Path | None:
        """The TOML file these settings were read from; None when none was."""
        return self._file

    def keys(self) -> list[str]:
        """Every dotted key, in the order the model declares them."""
        found = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            found += [f"{name}.{key}" for key in type(value).model_fields] if isinstance(value, _Section) else [name]
        return found

    def value(self, key: str) -> Any:
        section, _, name = key.partition(".")
        return getattr(getattr(self, section), name) if name else getattr(self, section)

    def source(self, key: str) -> Source:
        """Where ``key``'s value came from; the environment wins over the file, as it does when values are read."""
        return self._sources.get(key, "default")

    def effective(self) -> list[tuple[str, Any, Source]]:
        """Every key with its value as JSON shows it (a secret's masked) and where it came from."""
        return [(key, _shown(key, self.value(key)), self.source(key)) for key in self.keys()]

    def with_value(self, key: str, value: Any) -> Settings:
        """A copy with ``key`` set by the program rather than read (the HTTP API's switch of bundle): "given"."""
        section, _, name = key.partition(".")
        update = {section: getattr(self, section).model_copy(update={name: value})} if name else {section: value}
        copy = self.model_copy(update=update)
        copy._sources = {**self._sources, key: "given"}
        return copy

    def sources_from(self, new: Settings) -> Settings:
        """A copy whose keys that hold ``new``'s value are described as ``new`` describes them: a reload switches
        in some of a newly read configuration's keys and keeps the others."""
        copy = self.model_copy()
        described = {key: new if self.value(key) == new.value(key) else self for key in self.keys()}
        copy._sources = {key: by._sources[key] for key, by in described.items() if key in by._sources}
        copy._file = new._file
        return copy

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init values; the environment wins over it.
        return env_settings, init_settings


def _dotted(values: dict[str, Any]) -> frozenset[str]:
    """The dotted keys of values given in the shape of :class:`Settings` (a section's as a dict or a model)."""
    keys: set[str] = set()
    for name, value in values.items():
        if isinstance(value, BaseModel):
            value = {key: None for key in value.model_fields_set}
        if isinstance(value, dict) and _is_section(name):
            keys |= {f"{name}.{key}" for key in value}
        else:
            keys.add(name)
    return frozenset(keys)


def _is_section(name: str) -> bool:
    field = Settings.model_fields.get(name)
    return field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, _Section)


def _shown(key: str, value: Any) -> Any:
    """``value`` as JSON shows it; a set secret as :data:`MASKED`."""
    words = key.rpartition(".")[2].split("_")
    if value is not None and (isinstance(value, SecretStr) or any(word in words for word in SECRET_WORDS)):
        return MASKED
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list) and any(isinstance(item, BaseModel) for item in value):
        return [item.model_dump(mode="json") if isinstance(item, BaseModel) else item for item in value]
    return value


def env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def _zone_named(loc: tuple[Any, ...], values: dict[str, Any]) -> str:
    """`` (zone 'ward3')`` for a key inside the ``[[zones]]`` entry that names itself so, else nothing."""
    zones = values.get("zones")
    if len(loc) < 2 or loc[0] != "zones" or not isinstance(loc[1], int) or not isinstance(zones, list):
        return ""
    entry = zones[loc[1]] if loc[1] < len(zones) else None
    name = entry.get("name") if isinstance(entry, dict) else None
    return f" (zone {name!r})" if isinstance(name, str) and len(loc) > 2 else ""


def _describe(error: ValidationError, values: dict[str, Any] | None = None) -> str:
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        key = ".".join(str(part) for part in loc) or "(top level)"
        detail = f"{key}{_zone_named(loc, values or {})}: {item['msg'].removeprefix('Value error, ')}"
        if item["type"] not in ("missing", "extra_forbidden") and not (loc[:1] == ("zones",)
                                                                     and isinstance(item["input"], dict | list)):
            detail += f" (got {item['input']!r})"
        lines.append(f"{detail} [env {env_name(loc)}]")
    if len(lines) == 1:  # the common case stays one line, as a log line or a CLI error should be
        return f"invalid configuration: {lines[0]}"
    return "invalid configuration:\n" + "\n".join(f"  {line}" for line in lines)


def load_settings(config_file: Path | None = None) -> Settings:
    """Read the TOML file (an explicit path must exist) and the environment into :class:`Settings`."""
    path = config_file or DEFAULT_CONFIG_PATH
    values: dict[str, Any] = {}
    read = config_file is not None or path.exists()
    if read:
        try:
            with path.open("rb") as fh:
                values = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        described = _describe(exc, values)
        raise ConfigError(f"{path}: {described}" if read else described) from exc
    if read:
        settings._file = path
        settings._sources = {key: "file" if source == "given" else source for key, source in settings._sources.items()}
    return settings
