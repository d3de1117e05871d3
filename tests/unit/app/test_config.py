"""Configuration: TOML file + GSV_EDGE_* environment, and errors that name the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.commands import exit_codes
from daemon.config import MASKED, ConfigError, MqttSettings, Settings, default_node_id, load_settings
from tests.paths import REPO


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GSV_EDGE_"):
            monkeypatch.delenv(name)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GSV_EDGE_STATE_DIR", str(tmp_path / "state"))
    settings = load_settings(_write(tmp_path, ""))
    assert settings.mqtt.prefix == "gsv-edge" and settings.mqtt.port == 1883
    assert settings.mqtt.node_id == default_node_id() and settings.mqtt.node_id
    assert settings.engine.bundle is None and settings.audio.output_device is None
    assert settings.state_dir == tmp_path / "state"


def test_file_values_and_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(
        tmp_path,
        '[mqtt]\nhost = "broker.lan"\nport = 1884\n[hermes]\nsite_ids = ["kitchen", "hall"]\n'
        '[engine]\nbundle = ""\n[audio]\noutput_device = "USB Audio"\n',
    )
    monkeypatch.setenv("GSV_EDGE_MQTT__PORT", "1999")
    monkeypatch.setenv("GSV_EDGE_AUDIO__VOLUME", "0.5")
    settings = load_settings(path)
    assert (settings.mqtt.host, settings.mqtt.port) == ("broker.lan", 1999)
    assert settings.hermes.site_ids == ["kitchen", "hall"]
    assert settings.engine.bundle is None  # empty means fallback only
    assert settings.audio.output_device == "USB Audio" and settings.audio.volume == 0.5


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[mqtt]\nport = "abc"\n', "mqtt.port"),
        ("[mqtt]\nport = 70000\n", "mqtt.port"),
        ('[mqtt]\nnode_id = "a/b"\n', "mqtt.node_id"),
        ('[mqtt]\nnode_id = "hall\\n"\n', "mqtt.node_id"),  # a trailing newline is no part of a topic level
        ('[mqtt]\nprefix = "tts/#"\n', "mqtt.prefix"),
        ("[audio]\nvolume = 5\n", "audio.volume"),
        ("[queue]\nmax_depth = 0\n", "queue.max_depth"),
        ('[hermes]\npriority = "urgent"\n', "hermes.priority"),
        ("[mqtt]\nprot = 1883\n", "mqtt.prot"),  # typo: unknown keys are errors, not silently ignored
        ("[mqttt]\nport = 1883\n", "mqttt"),
        ('[engine]\ndefault_voice = "alice"\n', "engine.default_voice"),  # a neural voice without a bundle
        ("[engine]\nmax_batch = 9\n", "engine.max_batch"),
        ("[engine]\nmax_batch = 0\n", "engine.max_batch"),
    ],
)
def test_bad_file_value_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_write(tmp_path, text))
    assert f"{key}:" in str(err.value)


def test_without_a_config_file_an_error_names_only_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setattr("daemon.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    monkeypatch.setenv("GSV_EDGE_MQTT__PORT", "many")
    with pytest.raises(ConfigError) as err:
        load_settings(None)
    assert str(err.value).startswith("invalid configuration: mqtt.port:") and "absent.toml" not in str(err.value)


def test_bad_environment_value_names_key_and_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GSV_EDGE_MQTT__PORT", "many")
    with pytest.raises(ConfigError) as err:
        load_settings(_write(tmp_path, ""))
    assert "mqtt.port:" in str(err.value) and "GSV_EDGE_MQTT__PORT" in str(err.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML.*line 1"):
        load_settings(_write(tmp_path, "[mqtt\nport = 1"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.integration  # a fresh Python process
def test_serve_refuses_to_start_and_names_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "[mqtt]\nport = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "serve", "--config", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == exit_codes.SETUP
    assert "mqtt.port" in result.stderr and "GSV_EDGE_MQTT__PORT" in result.stderr


def test_unknown_fallback_voice_names_the_key(tmp_path: Path) -> None:
    from daemon.app.service import Service

    settings = load_settings(_write(tmp_path, '[engine]\nfallback_voice = "klingon"\n'))
    with pytest.raises(ConfigError, match="engine.fallback_voice"):
        Service(settings)


def test_each_value_s_source_environment_over_file_over_default(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GSV_EDGE_HTTP__PORT", "9999")
    monkeypatch.setenv("GSV_EDGE_STATE_DIR", str(tmp_path / "state"))
    path = _write(tmp_path, '[http]\nport = 9880\nhost = "0.0.0.0"\n[mqtt]\npassword = "hunter2"\n')
    settings = load_settings(path)
    shown = {key: (value, source) for key, value, source in settings.effective()}
    assert settings.config_file == path
    assert shown["http.port"] == (9999, "environment") and shown["http.host"] == ("0.0.0.0", "file")
    assert shown["state_dir"] == (str(tmp_path / "state"), "environment")
    assert shown["mqtt.password"] == (MASKED, "file") and shown["mqtt.username"] == (None, "default")
    assert shown["queue.max_depth"] == (32, "default") and list(shown) == settings.keys()


def test_settings_built_by_a_program_say_so_and_a_reload_takes_the_new_sources(tmp_path: Path) -> None:
    given = Settings(mqtt=MqttSettings(host="broker"), log_level="DEBUG", state_dir=tmp_path)
    assert given.config_file is None
    assert [given.source(key) for key in ("mqtt.host", "mqtt.port", "log_level")] == ["given", "default", "given"]
    read = load_settings(_write(tmp_path, f'state_dir = "{tmp_path}"\n[mqtt]\nhost = "other"\n'))
    switched = given.model_copy(update={"log_level": read.log_level}).sources_from(read)
    assert switched.log_level == "INFO" and switched.source("log_level") == "default"  # the new value's source
    assert switched.source("mqtt.host") == "given"  # not switched in: still the old value, from where it came
    assert switched.source("state_dir") == "file" and switched.config_file == read.config_file
    bundle = tmp_path / "other-bundle"
    chosen = read.with_value("engine.bundle", bundle)
    assert chosen.engine.bundle == bundle and chosen.source("engine.bundle") == "given"
    assert read.engine.bundle is None and read.source("engine.bundle") == "default"


ZONE_ERRORS = [
    ('[[zones]]\nname = "ward3"\noutput_device = "USB"\ntopic = "pa/ward3"\n',
     "zones.0: zone 'ward3': give output_device or topic, not both [env GSV_EDGE_ZONES__0]"),
    ('[[zones]]\nname = "ward3"\n', "zones.0: zone 'ward3': give output_device or topic, one of them is required"),
    ('[[zones]]\nname = "ward3"\ntopic = "pa/a"\n[[zones]]\nname = "ward3"\noutput_device = "USB"\n',
     "zones: zone 'ward3' is defined twice: each [[zones]] name must be unique"),
    ('[[zones]]\nname = "ward3"\ntopic = "pa/a"\nvolume = 3\n', "zones.0.volume (zone 'ward3'): "),
    ('[[zones]]\nname = "lobby"\ntopic = "pa/#"\n', "zones.0.topic (zone 'lobby'): must be a topic without '+', '#'"),
    ('[[zones]]\nname = "all"\ntopic = "pa/a"\n', "zones.0.name (zone 'all'): 'all' means every zone"),
    ('[[zones]]\nname = "ward3"\ntopic = "pa/a"\nvolum = 1\n', "zones.0.volum (zone 'ward3'): Extra inputs"),
]


@pytest.mark.parametrize(("text", "message"), ZONE_ERRORS)
def test_a_bad_zone_is_one_line_naming_the_zone_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(_write(tmp_path, text))
    assert "\n" not in str(error.value) and message in str(error.value)


def test_zones_are_read_in_order_with_their_defaults(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, '[[zones]]\nname = "lobby"\noutput_device = "USB"\nvolume = 0.5\n'
                                              '[[zones]]\nname = "garden"\ntopic = "pa/garden/play"\n'
                                              'lead_in_s = 0.4\n'))
    assert [(z.name, z.output_device, z.topic, z.volume, z.lead_in_s) for z in settings.zones] == [
        ("lobby", "USB", None, 0.5, 0.15), ("garden", None, "pa/garden/play", 1.0, 0.4)]
    shown = dict((key, value) for key, value, _ in settings.effective())
    assert shown["zones"][0]["name"] == "lobby"  # plain data, as the console's settings page shows it


@pytest.mark.parametrize(("text", "message"), [
    ('quiet_hours = "22:00"\n', "zones.0.quiet_hours (zone 'ward3'): must be START-END in local time"),
    ('quiet_hours = "22:00-24:00"\n', "zones.0.quiet_hours (zone 'ward3'): '24:00' is not a time of day HH:MM"),
    ('quiet_hours = "07:00-07:00"\n', "zones.0.quiet_hours (zone 'ward3'): start and end are the same time"),
    ('volume_schedule = {"7:00" = 0.5}\n', "zones.0.volume_schedule (zone 'ward3'): '7:00' is not a time of day"),
    ('volume_schedule = {"22:00" = 3}\n', "zones.0.volume_schedule (zone 'ward3'): volume at 22:00 must be between"),
])
def test_bad_quiet_hours_or_volume_schedule_name_the_zone(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(_write(tmp_path, f'[[zones]]\nname = "ward3"\ntopic = "pa/w"\n{text}'))
    assert "\n" not in str(error.value) and message in str(error.value)
