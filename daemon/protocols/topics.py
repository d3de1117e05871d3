"""Every MQTT topic the daemon uses, in one place."""

from __future__ import annotations

from daemon.config import MqttSettings

HERMES_SAY = "hermes/tts/say"
HERMES_SAY_FINISHED = "hermes/tts/sayFinished"
HERMES_ERROR = "hermes/error/tts"
HERMES_PLAY_FINISHED = "hermes/audioServer/+/playFinished"
RHASSPY_GET_VOICES = "rhasspy/tts/getVoices"
RHASSPY_VOICES = "rhasspy/tts/voices"


def hermes_play_bytes(site_id: str, request_id: str) -> str:
    return f"hermes/audioServer/{site_id}/playBytes/{request_id}"


class Topics:
    """The native API below ``<prefix>/<node_id>``."""

    def __init__(self, mqtt: MqttSettings) -> None:
        self.node_id = mqtt.node_id
        self.base = f"{mqtt.prefix}/{mqtt.node_id}"
        self.say = f"{self.base}/say"
        self.events = f"{self.base}/events"
        self.status = f"{self.base}/status"
        self.voices = f"{self.base}/voices"
        self.availability = f"{self.base}/availability"
        self.voice_register = f"{self.voices}/register"
        self.schedules = f"{self.base}/schedules"  # retained: the list; below it, the changes to make
        self.schedule_add = f"{self.schedules}/add"
        self.schedule_remove = f"{self.schedules}/remove"
        # Fleet requests: one box of the share group takes each (MQTT 5 shared subscription).
        self.shared_say = f"{mqtt.prefix}/say"
        self.shared_say_filter = f"$share/{mqtt.share_group}/{self.shared_say}" if mqtt.share_group else None

    def audio(self, request_id: str) -> str:
        return f"{self.base}/audio/{request_id}"

    def audio_chunk(self, request_id: str, index: int) -> str:
        return f"{self.base}/audio/{request_id}/{index}"

    def audio_end(self, request_id: str) -> str:
        return f"{self.base}/audio/{request_id}/end"
