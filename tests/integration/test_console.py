"""The web console in a real browser: Debian's chromium, headless, driven through chromium-driver by selenium.

Each test runs a daemon with the HTTP API and opens the box's root as a user would. The browser's own log of
every request the page made shows it loaded nothing from anywhere but the box. Screenshots of each page, at a
768-px-wide screen, are written to docs/console/ (the README and docs/http.md show them).
"""

from __future__ import annotations

import base64
import io
import json
import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import soundfile
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from daemon.app.reload import Reloader
from daemon.core.audit import read_records
from daemon.model.bundle import Bundle
from daemon.model.engine import Engine
from daemon.model.hardware import HardwareProfile
from tests.conftest import AlsaCapture, Broker
from tests.doubles import ToneEngine
from tests.http_fixtures import TONE_S
from tests.integration.test_http_native import MANY, tokens
from tests.paths import REPO
from tests.unit.core.test_pipeline import CachedTone
from tests.unit.model.test_engine import make_wav

SHOTS = REPO / "docs" / "console"
TABLET = 768  # px: the narrowest screen the pages are laid out for side by side
PHONE = 390
WAIT_S = 20


def chromium(language: str) -> WebDriver:
    """Headless chromium whose ``navigator.language`` is ``language``, logging every request its pages make."""
    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromium-driver is not installed (scripts/setup.sh dev installs chromium and it)"
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--autoplay-policy=no-user-gesture-required", f"--window-size={TABLET},1000",
                     # a microphone that needs no permission and plays a beep: the voices page records from it
                     "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": language})  # headless ignores --lang
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = chromium("en-US")
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The browser on one daemon's console, and every URL the page has asked for since it opened."""

    def __init__(self, driver: WebDriver, url: str) -> None:
        self.driver = driver
        self.url = url
        self.requested: list[str] = []
        driver.get(f"{url}/healthz")  # on the box's origin, to forget what an earlier test's box left there
        driver.delete_all_cookies()
        driver.execute_script("localStorage.clear()")
        self._drain()
        self.requested.clear()
        driver.get(f"{url}/")

    def _drain(self) -> None:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])

    def external(self) -> list[str]:
        """URLs the page asked for that are not the box's own."""
        self._drain()
        return [u for u in self.requested if not u.startswith((self.url + "/", "data:", "blob:"))]

    def wait(self, condition: Callable[[WebDriver], object], timeout: float = WAIT_S) -> object:
        return WebDriverWait(self.driver, timeout).until(condition)

    def find(self, css: str):  # noqa: ANN201 - a WebElement
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def visible(self, css: str):  # noqa: ANN201 - a WebElement, once shown
        return self.wait(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()),
                                        False))

    def text(self, css: str, contains: str) -> str:
        """The element's text once it contains ``contains``."""
        self.wait(lambda d: contains in d.find_element(By.CSS_SELECTOR, css).text)
        return self.find(css).text

    def log_in(self, token: str) -> None:
        field = self.visible("#login-token")
        field.clear()
        field.send_keys(token)
        self.find("#login-form button[type=submit]").click()

    def nav(self) -> list[str]:
        """The pages the caller may open, as the bar lists them."""
        self.visible("#nav a")
        return [link.text for link in self.driver.find_elements(By.CSS_SELECTOR, "#nav a")]

    def open(self, name: str) -> None:
        self.visible(f"#nav-{name}").click()
        self.visible(f"section#{name}")

    def select(self, css: str, value: str) -> None:
        self.wait(lambda d: d.execute_script(
            "const s = document.querySelector(arguments[0]); s.value = arguments[1]; return s.value === arguments[1]",
            css, value))

    def error_for(self, form: str, field: str, contains: str) -> str:
        """The API's message shown next to ``field`` of ``form``."""
        return self.text(f'{form} [data-error-for="{field}"]', contains)

    def audio(self, css: str) -> tuple[dict, bytes]:
        """The ``<audio>`` element once it can play (its state), and the bytes of its source as the page fetches
        them (with the page's session cookie)."""
        self.wait(lambda d: d.execute_script("const a = document.querySelector(arguments[0]); "
                                             "return !a.hidden && a.readyState >= 2", css))
        played = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1]; const a = document.querySelector(arguments[0]); "
            "a.play().then(() => done({error: a.error, duration: a.duration, src: a.currentSrc, "
            "wav: a.canPlayType('audio/wav')}), e => done({error: String(e)}))", css)
        encoded = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1]; fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => "
            "{ let s = ''; for (const x of new Uint8Array(b)) s += String.fromCharCode(x); done(btoa(s)); })",
            played.get("src"))
        return played, base64.b64decode(encoded)

    def rows(self, css: str) -> list[list[str]]:
        """The cells of a table's rows, as text."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(r => [...r.cells].map(c => c.textContent))", css)

    def fetch_text(self, href: str) -> str:
        """What the page gets for ``href`` (with its session cookie)."""
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1]; fetch(arguments[0]).then(r => r.text()).then(done)", href)

    def fits(self, width: int) -> None:
        """Nothing is cut off or pushed sideways at ``width`` px: the page is no wider than the screen."""
        self._viewport(width, 900)
        overflow = self.driver.execute_script("return document.documentElement.scrollWidth")
        wide = self.driver.execute_script(  # what sticks out, for the message (a table's wrapper scrolls it)
            "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > "
            "arguments[0] && !e.closest('.table-wrap')).slice(0, 5).map(e => `${e.tagName}#${e.id}`)", width)
        assert overflow <= width, f"the page is {overflow} px wide on a {width} px screen: {wide}"

    def screenshot(self, name: str, width: int = TABLET) -> None:
        """The whole page at ``width`` px into docs/console/NAME.png."""
        self._viewport(width, 900)
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self._viewport(width, height)
        SHOTS.mkdir(parents=True, exist_ok=True)
        assert self.driver.save_screenshot(str(SHOTS / f"{name}.png"))
        self._viewport(TABLET, 1000)

    def _viewport(self, width: int, height: int) -> None:
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < TABLET})


def test_log_in_refused_then_accepted_and_out_again(browser: WebDriver, http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"])
    secret = made["boss"]["Authorization"].removeprefix("Bearer ")
    daemon, url = http_daemon()
    page = Page(browser, url)
    assert browser.current_url == f"{url}/console/"
    page.log_in("gsv_wrong")
    assert "invalid or revoked token" in page.text("#login-error", "Refused")
    page.fits(TABLET)
    page.fits(PHONE)
    page.screenshot("login-refused")
    [refused] = [r for r in read_records(daemon.service.settings.state_dir) if r["outcome"] == "rejected"]
    assert refused["topic"] == "POST /v1/session" and refused["reason"] == "401: invalid or revoked token"

    page.log_in(secret)
    assert page.text("#who-name", "boss") == "boss"
    assert not page.find("#login").is_displayed() and page.visible("#nav a")
    browser.refresh()  # the session outlives a reload: the cookie, not the page, holds it
    assert page.text("#who-name", "boss") == "boss"
    cookie = browser.get_cookie("gsv_session")
    browser.add_cookie({**cookie, "value": "ended-long-ago"})
    browser.refresh()
    assert page.text("#login-error", "ended") == "Your session has ended: log in again."
    browser.add_cookie(cookie)
    browser.refresh()
    assert page.text("#who-name", "boss") == "boss"
    page.visible("#logout-button").click()
    page.visible("#login-token")
    assert page.find("#who-name").text == "" and not browser.get_cookies()
    assert page.external() == []


def test_status_is_live_and_raises_alerts(browser: WebDriver, http_daemon, mosquitto_broker: Broker,
                                          tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"])
    bundle = tmp_path / "bad-bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{not json")
    daemon, url = http_daemon(engine_section={"bundle": str(bundle)})
    page = Page(browser, url)
    page.log_in(made["boss"]["Authorization"].removeprefix("Bearer "))
    page.text("#st-engine-state", "degraded")
    assert "bad-bundle" in page.text("#alerts", "The neural engine is down")
    assert page.text("#st-mqtt-state", "connected") == "connected"
    assert page.find("#st-model").text == "espeak-ng fallback" and page.find("#st-queue").text == "0"
    browser.execute_script("window.stillThisPage = true")

    daemon.say({"id": "hello-1", "text": "Hello."})  # over MQTT: the page hears it on the event stream
    page.wait(lambda d: "hello-1\tdone" in d.execute_script(
        "return [...document.querySelectorAll('#st-events tr')].map(r => r.cells[1].textContent + '\\t' + "
        "r.cells[2].textContent).join('\\n')"))
    assert browser.execute_script("return window.stillThisPage") is True  # no reload
    page.fits(TABLET)
    page.fits(PHONE)

    mosquitto_broker.stop()
    assert mosquitto_broker.host in page.text("#alerts", "is not connected")
    assert page.find("#st-mqtt-state").text == "not connected"
    assert page.external() == []


def test_speak_in_the_browser_with_the_api_s_own_messages(browser: WebDriver, http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, kiosk=["speak"])
    daemon, url = http_daemon()  # tones of TONE_S a sentence, at 16 kHz
    page = Page(browser, url)
    page.log_in(made["kiosk"]["Authorization"].removeprefix("Bearer "))
    assert page.nav() == ["Status", "Speak"]  # a speak token manages nothing
    page.open("speak")
    page.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#speak-voice option")) == 4)
    assert page.find("#speak-output option[value=play]").get_attribute("disabled")  # no speaker on this box

    page.find("#speak-submit").click()
    page.error_for("#speak-form", "text", "empty text")
    page.find("#speak-text").send_keys("One. Two.")
    speed = page.find("#speak-speed")
    speed.clear()
    speed.send_keys("9")
    page.find("#speak-submit").click()
    page.error_for("#speak-form", "speed", "less than or equal to 4")
    assert page.find('#speak-form [data-error-for="text"]').text == ""
    speed.clear()
    speed.send_keys("1")
    page.select("#speak-voice", "tone-b")
    page.select("#speak-priority", "high")
    page.find("#speak-submit").click()

    played, wav = page.audio("#speak-audio")
    request_id = page.find("#speak-id").text
    done = daemon.wait_event(request_id, "done")
    samples, rate = soundfile.read(io.BytesIO(wav))
    assert rate == 16000 and len(samples) / rate == pytest.approx(2 * TONE_S, abs=0.01)
    assert played["error"] is None and played["wav"] and played["duration"] == pytest.approx(2 * TONE_S, abs=0.01)
    assert done["audio_ms"] == 1000 and page.text('[data-timing="timing.audio"]', "ms") == "1000 ms"
    assert page.find("#speak-state").text == "done"
    page.screenshot("speak")
    page.fits(PHONE)
    [row] = [r for r in read_records(daemon.service.settings.state_dir) if r["request_id"] == request_id]
    assert (row["token_name"], row["voice"], row["outcome"], row["topic"]) == ("kiosk", "tone-b", "done",
                                                                               "POST /v1/say")
    assert page.external() == []


def test_speech_is_heard_in_the_browser_from_its_first_sentence(browser: WebDriver, http_daemon) -> None:
    pace = threading.Semaphore(0)
    daemon, url = http_daemon(ToneEngine(seconds=TONE_S, pace=pace))
    page = Page(browser, url)  # a fresh box: anonymous on loopback may speak
    page.open("speak")
    page.find("#speak-text").send_keys("One. Two. Three.")
    page.find("#speak-submit").click()
    pace.release()  # the first sentence of three

    def heard_s(driver: WebDriver) -> float:
        return float(driver.execute_script("return document.querySelector('#speak-audio').dataset.heardS || 0"))

    page.wait(lambda d: heard_s(d) >= TONE_S)
    request_id = page.find("#speak-id").text
    assert httpx.get(f"{url}/v1/requests/{request_id}").json()["state"] == "started"  # heard before it is done
    pace.release(2)
    played, wav = page.audio("#speak-audio")  # then the whole of it, to hear again
    samples, rate = soundfile.read(io.BytesIO(wav))
    assert heard_s(page.driver) == pytest.approx(len(samples) / rate, abs=0.001) == pytest.approx(3 * TONE_S)
    assert played["error"] is None and daemon.wait_event(request_id, "done")["audio_ms"] == round(3 * TONE_S * 1000)
    assert page.external() == []


def test_register_a_voice_by_upload_speak_with_it_and_remove_it(browser: WebDriver, http_daemon, demo_bundle: Path,
                                                                tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"])
    engine = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path / "voices")
    daemon, url = http_daemon(engine)
    short, clip = tmp_path / "short.wav", tmp_path / "carol.wav"
    short.write_bytes(make_wav(seconds=1.0))
    clip.write_bytes(make_wav(seed=3))
    page = Page(browser, url)
    page.log_in(made["boss"]["Authorization"].removeprefix("Bearer "))
    assert page.nav()[:3] == ["Status", "Speak", "Voices"]
    page.open("voices")
    page.visible("#voices-list tr")  # eSpeak NG's fallback voice at least

    page.find("#voice-name").send_keys("../carol")
    page.find("#voice-text").send_keys("This is a reference clip.")
    page.select("#voice-lang", "en")
    page.find("#voice-audio").send_keys(str(short))
    page.find("#voice-submit").click()
    assert "is invalid" in page.error_for("#voice-form", "name", "voice name")
    page.find("#voice-name").clear()
    page.find("#voice-name").send_keys("carol")
    page.find("#voice-submit").click()
    assert "3-10 s" in page.error_for("#voice-form", "audio", "short.wav")
    assert page.find('#voice-form [data-error-for="name"]').text == ""
    page.find("#voice-audio").send_keys(str(clip))
    page.find("#voice-description").send_keys("Carol, the front desk")
    page.find("#voice-submit").click()
    assert page.text("#voice-added", "registered") == "The voice carol is registered."
    row = page.visible('#voices-list tr[data-voice="carol"]')
    assert row.text.startswith("carol en Carol, the front desk\n4.0 s clip: “This is a reference clip.”")
    page.screenshot("voices")
    page.fits(PHONE)

    page.open("speak")
    page.wait(lambda d: d.find_elements(By.CSS_SELECTOR, '#speak-voice option[value="carol"]'))
    page.find("#speak-text").send_keys("Hello there.")
    page.select("#speak-voice", "carol")
    page.find("#speak-submit").click()
    played, wav = page.audio("#speak-audio")
    done = daemon.wait_event(page.find("#speak-id").text, "done", timeout=120)
    samples, rate = soundfile.read(io.BytesIO(wav))
    assert rate == engine.sample_rate and len(samples) / rate == pytest.approx(done["audio_ms"] / 1000, abs=0.002)
    assert played["error"] is None and played["duration"] == pytest.approx(len(samples) / rate, abs=0.01)
    assert done["engine"] == engine.name and done["fallback"] is False

    page.open("voices")
    page.visible('#voices-list tr[data-voice="carol"] button.secondary').click()  # preview: carol says a sentence
    previewed, wav = page.audio("#voice-preview-audio")
    samples, rate = soundfile.read(io.BytesIO(wav))
    assert previewed["error"] is None and rate == engine.sample_rate and len(samples) > rate // 2
    assert page.find("#voice-preview-label").text == "carol says a sentence:"
    page.visible('#voices-list tr[data-voice="carol"] button.danger').click()
    assert "carol" in browser.switch_to.alert.text
    browser.switch_to.alert.accept()
    page.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, '#voices-list tr[data-voice="carol"]'))
    assert "carol" not in {v.name for v in engine.voices()}
    page.visible('#voices-list tr[data-voice="en"] button.danger').click()
    browser.switch_to.alert.accept()
    assert "eSpeak NG" in page.text("#voices-error", "eSpeak")  # built in: the API's 409, as it words it
    assert page.external() == []


def test_history_shows_requests_and_refusals_filtered_paged_and_as_csv(browser: WebDriver, http_daemon,
                                                                      tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"], kiosk=["speak"])
    daemon, url = http_daemon(CachedTone(seconds=TONE_S), **MANY)  # its audio is cached: History replays it
    page = Page(browser, url)
    page.log_in("gsv_wrong")
    page.text("#login-error", "Refused")
    page.log_in(made["boss"]["Authorization"].removeprefix("Bearer "))
    assert page.nav() == ["Status", "Speak", "Voices", "History", "Model and settings"]
    page.open("speak")
    page.find("#speak-text").send_keys("Hello.")
    page.find("#speak-submit").click()
    page.audio("#speak-audio")
    mine = page.find("#speak-id").text
    for n in range(11):
        said = httpx.post(f"{url}/v1/say", json={"id": f"h{n}", "text": "Hi.", "voice": "tone-a",
                                                 "output": "response"}, headers=made["kiosk"])
        assert said.status_code == 202
    daemon.wait_event("h10", "done")

    page.open("history")
    page.text("#history-page", "(13 rows)")
    rows = page.rows("#history-rows tr")
    assert [row[2] for row in rows[:11]] == [f"h{n}" for n in range(10, -1, -1)]  # newest first
    [spoken] = [row for row in rows if row[2] == mine]
    assert spoken[1] == "done" and spoken[3].startswith("HTTPboss@127.0.0.1:")  # the protocol over who
    [refused] = [row for row in rows if row[1] == "rejected"]
    assert refused[6] == "401: invalid or revoked token" and refused[3].startswith("HTTP127.0.0.1:")

    page.find('#history-rows tr[data-request="h10"] button.link').click()  # the request's events
    page.text("#history-detail-id", "h10")
    events = page.rows("#history-detail-events tr")
    assert [row[1] for row in events] == ["queued", "started", "first_audio", "done"]
    assert page.find("#history-detail-state").text == "done"
    page.find('#history-rows tr[data-request="h10"] button.secondary').click()  # its audio, from the cache
    replayed, wav = page.audio('#history-rows tr[data-request="h10"] audio')
    samples, rate = soundfile.read(io.BytesIO(wav))
    assert replayed["error"] is None and len(samples) / rate == pytest.approx(TONE_S, abs=0.01)

    page.select("#history-outcome", "rejected")
    page.find("#history-form button[type=submit]").click()
    page.text("#history-page", "(1 rows)")
    assert [row[1] for row in page.rows("#history-rows tr")] == ["rejected"]
    page.find("#history-reset").click()
    page.find("#history-token").send_keys("kiosk")
    page.select("#history-per-page", "10")
    page.find("#history-form button[type=submit]").click()
    assert page.text("#history-page", "Page 1 of 2") == "Page 1 of 2 (11 rows)"
    assert not page.find("#history-next").get_attribute("disabled") and page.find("#history-prev").get_attribute(
        "disabled")
    page.screenshot("history")
    page.fits(PHONE)
    page.find("#history-next").click()
    page.text("#history-page", "Page 2 of 2")
    assert [row[2] for row in page.rows("#history-rows tr")] == ["h0"]

    exported = page.fetch_text(page.find("#history-csv").get_attribute("href"))
    lines = exported.strip().splitlines()
    assert lines[0].startswith("time,ts,outcome,") and len(lines) == 12 and all(",kiosk," in line for line in lines[1:])
    assert page.external() == []


def test_the_page_speaks_the_browser_s_language_and_switches(browser: WebDriver, http_daemon, tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"])
    _, url = http_daemon()
    chinese = chromium("zh-CN")
    try:
        page = Page(chinese, url)
        page.text("#login h1", "登录")
        assert chinese.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"
        page.log_in(made["boss"]["Authorization"].removeprefix("Bearer "))
        assert page.nav() == ["状态", "播报", "语音", "历史", "模型与设置"]
        page.text("#st-engine-state", "就绪")
        page.text("#st-uptime", "秒")  # units too
        assert page.find("#st-state").text == "空闲" and page.find("#st-mqtt-state").text == "已连接"
        page.fits(TABLET)
        page.screenshot("status-zh")
        Select(page.find("#language")).select_by_value("en")
        page.text("#st-engine-state", "ready")
        assert page.nav() == ["Status", "Speak", "Voices", "History", "Model and settings"]
        chinese.refresh()  # the choice is kept
        page.text("#st-engine-state", "ready")
        assert page.external() == []
    finally:
        chinese.quit()
    english = Page(browser, url)  # an English browser gets English
    english.text("#login h1", "Log in")


def test_a_fresh_box_opens_without_a_login_and_may_only_speak(browser: WebDriver, http_daemon) -> None:
    _, url = http_daemon()  # no token yet, loopback: anonymous calls may speak
    page = Page(browser, url)
    assert page.nav() == ["Status", "Speak"]
    assert page.text("#who-name", "anonymous") == "anonymous"
    assert page.find("#login-button").is_displayed() and not page.find("#logout-button").is_displayed()
    page.text("#st-engine-state", "ready")
    assert not page.find("#st-events-card").is_displayed()  # the event stream is an admin's
    page.find("#login-button").click()
    page.visible("#login-token")
    assert page.external() == []


def test_a_clip_recorded_in_the_browser_registers_a_voice(browser: WebDriver, http_daemon, demo_bundle: Path,
                                                          tmp_path: Path) -> None:
    made = tokens(tmp_path, curator=["voices"])
    engine = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path / "voices")
    _, url = http_daemon(engine)
    page = Page(browser, url)
    page.log_in(made["curator"]["Authorization"].removeprefix("Bearer "))
    assert page.nav() == ["Voices"]  # a voices token: the list too, without speaking
    page.visible('#voices-list tr[data-voice="en"]')
    assert not page.driver.find_elements(By.CSS_SELECTOR, "#voices-list button.secondary")  # no preview: no speak
    record = page.find("#voice-record")
    assert record.is_enabled() and record.text == "Record"
    record.click()
    page.wait(lambda d: d.execute_script(
        "return parseFloat(document.querySelector('#voice-record-time').textContent.split(' ')[1]) >= 4"))
    record.click()
    page.text("#voice-record-time", "recorded")
    seconds = float(page.find("#voice-record-time").text.split()[1])
    assert 4.0 <= seconds < 10
    chosen = page.driver.execute_script("const f = document.querySelector('#voice-audio').files[0]; "
                                        "return f && [f.name, f.type, f.size]")
    assert chosen[:2] == ["recording.wav", "audio/wav"]
    page.visible("#voice-recorded")
    page.find("#voice-name").send_keys("dave")
    page.find("#voice-text").send_keys("This is a reference clip.")
    page.select("#voice-lang", "en")
    page.screenshot("voices-record")
    page.find("#voice-submit").click()
    assert page.text("#voice-added", "registered") == "The voice dave is registered."
    assert engine.voices_store.meta("dave").seconds == pytest.approx(seconds, abs=0.1)  # the recording, as measured
    assert page.external() == []


def test_model_and_settings_show_the_bundle_where_values_came_from_and_reload(
        browser: WebDriver, http_daemon, demo_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = tokens(tmp_path, boss=["admin"], curator=["voices"])
    monkeypatch.setenv("GSV_EDGE_QUEUE__MAX_TEXT_CHARS", "1500")
    bundle = Bundle.load(demo_bundle)
    engine = Engine(bundle, HardwareProfile.load("x86-cpu"), tmp_path / "voices")
    daemon, url = http_daemon(engine, sections={"mqtt": {"username": "box", "password": "hunter2"}})
    page = Page(browser, url)
    page.log_in(made["curator"]["Authorization"].removeprefix("Bearer "))
    assert "Model and settings" not in page.nav()  # an admin's page
    page.visible("#logout-button").click()
    page.log_in(made["boss"]["Authorization"].removeprefix("Bearer "))
    page.open("model")

    digest = bundle.graphs["t2s_step"].sha256
    step = page.text('#model-graphs tr[data-graph="t2s_step"]', digest)
    assert "t2s_step.onnx" in step and f"{bundle.graphs['t2s_step'].bytes:,} bytes" in step
    assert page.find("#model-name").text == engine.name and page.find("#model-engine-state").text == "ready"
    assert page.find('#model-bundle [data-key="Bundle digest"]').text == bundle.digest
    assert page.find('#model-provenance [data-key="sources.gpt.file"]').text == "demo-e1.ckpt"
    assert ["t2s_step", "logits", "max_abs_diff"] == page.rows("#model-parity tr")[3][:3]
    settings = {row[0]: row[1:] for row in page.rows("#model-settings tr")}
    assert settings["mqtt.password"] == ["********", "file"] and settings["mqtt.username"] == ["box", "file"]
    assert settings["queue.max_text_chars"] == ["1500", "environment"]
    assert settings["queue.max_depth"] == ["32", "default"]
    assert "hunter2" not in browser.page_source

    page.find("#model-reload").click()
    refused = page.text("#model-reload-outcome", "refused")
    assert refused == "reload refused: this daemon was not started by gsv-edge serve"
    assert "bad" in page.find("#model-reload-outcome").get_attribute("class")
    config = daemon.service.settings.config_file
    assert config is not None
    daemon.service.reload_hook = Reloader(daemon.service, config).reload  # as gsv-edge serve wires it
    config.write_text(config.read_text() + "\n[audit]\nmax_rows = 5000\n")
    page.find("#model-reload").click()
    reloaded = page.text("#model-reload-outcome", "reloaded")
    assert reloaded == f"reloaded: engine {engine.name}; changed audit.max_rows"
    page.wait(lambda d: page.rows('#model-settings tr[data-key="audit.max_rows"]') == [["audit.max_rows", "5000",
                                                                                         "file"]])
    page.fits(TABLET)
    page.fits(PHONE)
    page.screenshot("model")
    assert page.external() == []


def test_model_page_says_the_fallback_speaks_without_a_bundle(browser: WebDriver, http_daemon,
                                                              tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"])
    _, url = http_daemon(engine_section={})
    page = Page(browser, url)
    page.log_in(made["boss"]["Authorization"].removeprefix("Bearer "))
    page.open("model")
    assert "the eSpeak NG fallback speaks" in page.text("#model-alerts", "No model bundle is configured")
    assert page.find("#model-engine-state").text == "fallback only"
    assert not page.find("#model-graphs-card").is_displayed() and not page.find("#model-bundle").is_displayed()
    page.visible('#model-settings tr[data-key="engine.bundle"]')
    assert page.rows('#model-settings tr[data-key="engine.bundle"]') == [["engine.bundle", "-", "default"]]


def test_history_shows_who_changed_what_and_the_voices_who_registered_them(browser: WebDriver, http_daemon,
                                                                           demo_bundle: Path, tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"], curator=["voices"])
    engine = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path / "voices")
    daemon, url = http_daemon(engine)
    config = tmp_path / "cli.toml"
    config.write_text(f"state_dir = {json.dumps(str(daemon.service.settings.state_dir))}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GSV_EDGE_")}
    added = subprocess.run([sys.executable, "-m", "daemon", "token", "add", "door", "--scope", "speak", "--config",
                            str(config)], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True,
                           text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    upload = {"data": {"name": "carol", "text": "This is a reference clip.", "lang": "en"},
              "files": {"audio": ("carol.wav", make_wav(seed=3), "audio/wav")}}
    assert httpx.post(f"{url}/v1/voices", **upload, headers=made["curator"], timeout=120).status_code == 201
    assert httpx.post(f"{url}/v1/say", json={"text": "Hi.", "voice": "carol", "output": "response"},
                      headers=made["boss"]).status_code == 202  # a request among the changes
    me = pwd.getpwuid(os.geteuid()).pw_name

    page = Page(browser, url)
    page.log_in(made["boss"]["Authorization"].removeprefix("Bearer "))
    page.open("voices")
    row = page.visible('#voices-list tr[data-voice="carol"]')
    assert row.find_elements(By.CSS_SELECTOR, "td")[3].text.endswith("by token curator")

    page.open("history")
    page.wait(lambda d: len(page.rows("#history-rows tr")) == 3)
    page.select("#history-kind", "change")
    page.find("#history-form button[type=submit]").click()
    page.text("#history-page", "(2 rows)")
    voice, token = page.rows("#history-rows tr.change")
    assert voice[1:4] == ["voice registered", "voice carol", "HTTPby token curator"] and voice[4] == "carol"
    assert token[1:4] == ["token added", "token door", f"command lineby OS user {me}"]
    assert token[6] == "scopes speak"
    page.screenshot("history-changes")
    page.fits(PHONE)
    page.find("#history-reset").click()
    page.find("#history-user").send_keys(me)
    page.find("#history-form button[type=submit]").click()
    page.text("#history-page", "(1 rows)")
    assert [row[1] for row in page.rows("#history-rows tr")] == ["token added"]
    exported = page.fetch_text(page.find("#history-csv").get_attribute("href"))
    header, line = exported.strip().splitlines()
    assert header.endswith(",os_user,subject") and line.endswith(f",{me},door")


class Hold(threading.Event):
    """A gate for :class:`ToneEngine` that holds synthesis until set, however long the screenshots take."""

    def wait(self, timeout: float | None = None) -> bool:
        return super().wait(WAIT_S * 3)


def test_status_plots_timings_lists_the_queue_and_shows_disk_and_memory(browser: WebDriver, http_daemon,
                                                                         tmp_path: Path) -> None:
    made = tokens(tmp_path, boss=["admin"])
    hold = Hold()
    hold.set()
    daemon, url = http_daemon(ToneEngine(seconds=TONE_S, gate=hold), **MANY)
    page = Page(browser, url)
    page.log_in(made["boss"]["Authorization"].removeprefix("Bearer "))
    page.text("#st-plot-empty", "No request was done")
    assert not page.driver.find_elements(By.CSS_SELECTOR, "#st-plot circle")
    page.open("speak")
    page.find("#speak-text").send_keys("Hello. Goodbye.")
    page.find("#speak-submit").click()
    page.audio("#speak-audio")
    spoken = daemon.wait_event(page.find("#speak-id").text, "first_audio")

    page.open("status")
    page.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#st-plot circle.first-audio")) == 1)
    [tip] = browser.execute_script(  # in one go: the plot is drawn anew on each refresh
        "return [...document.querySelectorAll('#st-plot circle.first-audio title')].map(t => t.textContent)")
    assert tip.endswith(f"{spoken['latency_ms']} ms")
    assert len(page.driver.find_elements(By.CSS_SELECTOR, "#st-plot circle.rtf")) == 1
    assert page.find("#st-plot-empty").is_displayed() is False
    disk = page.text("#st-disk", "free of")
    assert "GiB" in disk or "MiB" in disk
    assert "available of" in page.find("#st-memory").text  # the daemon's own: in a test run, the whole of pytest
    assert re.fullmatch(r"[0-9]+(\.[0-9])? (MiB|GiB)", page.find("#st-rss").text), page.find("#st-rss").text
    browser.execute_script("window.stillThisPage = true")

    for n in range(2):  # over the API while the page is open: the plot grows without a reload
        said = httpx.post(f"{url}/v1/say", json={"id": f"more-{n}", "text": "More.", "output": "response"},
                          headers=made["boss"])
        assert said.status_code == 202
    daemon.wait_event("more-1", "done")
    page.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#st-plot circle.first-audio")) == 3)
    assert len(page.driver.find_elements(By.CSS_SELECTOR, "#st-plot polyline")) == 2

    hold.clear()  # the next request is held in synthesis: the rest wait behind it by priority
    try:
        for request_id, priority in (("held", "normal"), ("later", "low"), ("urgent", "high")):
            said = httpx.post(f"{url}/v1/say", json={"id": request_id, "text": f"The {request_id} one.",
                                                      "priority": priority, "output": "response"},
                              headers=made["boss"])
            assert said.status_code == 202
            if request_id == "held":
                daemon.wait_event("held", "started")
        page.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#st-lineup tr")) == 3)
        rows = page.rows("#st-lineup tr")
        assert [row[:4] for row in rows] == [["held", "speaking now", "normal", "HTTP"],
                                             ["urgent", "waiting", "high", "HTTP"],
                                             ["later", "waiting", "low", "HTTP"]]
        assert rows[1][5] == "The urgent one."  # an admin reads the texts
        assert browser.execute_script("return window.stillThisPage") is True
        page.fits(TABLET)
        page.fits(PHONE)
        page.screenshot("status")
        page.screenshot("status-phone", PHONE)
    finally:
        hold.set()
    daemon.wait_event("later", "done")
    page.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, "#st-lineup tr"))
    assert page.find("#st-lineup-empty").is_displayed()
    assert page.external() == []


def test_status_alerts_while_the_audio_device_fails_and_after(browser: WebDriver, http_daemon, alsa: AlsaCapture,
                                                              tmp_path: Path) -> None:
    made = tokens(tmp_path, kiosk=["speak"])
    audio = {"output_device": "gsvbroken", "retry_initial_s": 0.1, "retry_max_s": 0.2}
    daemon, url = http_daemon(sections={"audio": audio})
    page = Page(browser, url)
    page.log_in(made["kiosk"]["Authorization"].removeprefix("Bearer "))
    page.text("#st-engine-state", "ready")
    assert page.find("#alerts").text == ""
    said = httpx.post(f"{url}/v1/say", json={"id": "loud", "text": "Hello.", "output": "play"}, headers=made["kiosk"])
    assert said.status_code == 202
    retry = daemon.wait_event("loud", "failed")
    alert = page.text("#alerts", "The audio device fails")  # a speak token polls: no event stream
    assert retry["reason"] in alert
    assert page.rows("#st-lineup tr")[0][:2] == ["loud", "speaking now"]
    alsa.repair()
    daemon.wait_event("loud", "done")
    assert page.text("#alerts", "it plays again").startswith("Audio device errors since start: ")
    assert browser.execute_script("return [...document.querySelectorAll('#alerts .alert')].map(a => a.className)") \
        == ["alert info"]
    assert page.external() == []


def test_status_alerts_when_the_state_database_refuses_writes(browser: WebDriver, http_daemon,
                                                              tmp_path: Path) -> None:
    """Another process holding the database's write lock past the daemon's busy timeout stands in for a failing
    state disk: the say is refused, nothing is lost silently, and the page says writes failed."""
    made = tokens(tmp_path, boss=["admin"])
    daemon, url = http_daemon()
    page = Page(browser, url)
    page.log_in(made["boss"]["Authorization"].removeprefix("Bearer "))
    page.text("#st-engine-state", "ready")
    assert page.find("#alerts").text == ""
    holder = sqlite3.connect(daemon.service.settings.state_dir / "state.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        said = httpx.post(f"{url}/v1/say", json={"id": "locked", "text": "Hello."}, headers=made["boss"], timeout=120)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert said.status_code == 503 and said.headers["retry-after"], said.text  # the box is at fault, not the call
    assert said.json()["error"]["code"] == "state_write_failed" and "database is locked" in said.text
    alert = page.text("#alerts", "writes to the state database failed")
    assert int(alert.split()[0]) >= 1
    again = httpx.post(f"{url}/v1/say", json={"id": "unlocked", "text": "Hello."}, headers=made["boss"])
    assert again.status_code == 202
    daemon.wait_event("unlocked", "done")
