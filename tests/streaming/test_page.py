"""The page at ``/`` in a real headless Chromium (Debian's package) driven by Playwright, on the
real tiny.en model: upload a speech file and read its transcript; the microphone button with
Chromium's fake capture device playing a speech WAV. Screenshots land in the test's tmp dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.speech import SPEECH_DIR, decode_16k_mono
from tests.streaming.conftest import require_speech, write_wav

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
JFK = SPEECH_DIR / "jfk" / "jfk.wav"


@pytest.fixture(scope="module")
def sync_playwright():
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (scripts/install-system-packages.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


def launch(playwright, *extra_args: str):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=[*CHROMIUM_ARGS, *extra_args])


def test_upload_shows_the_transcript_with_timestamps_and_downloads(real_service,
                                                                   sync_playwright, tmp_path):
    require_speech()
    browser = launch(sync_playwright)
    try:
        page = browser.new_page()
        page.goto(real_service.base_url + "/")
        page.wait_for_function("document.getElementById('mel-backend').textContent === 'cpu'")
        assert page.text_content("#model") == real_service.state.model_id
        page.set_input_files("#file", str(JFK))
        page.wait_for_selector("#transcript .segment", timeout=120_000)
        page.screenshot(path=str(tmp_path / "upload.png"), full_page=True)
        segments = page.locator("#transcript .segment").all_text_contents()
        text = " ".join(segments).lower()
        assert "ask not what your country can do for you" in text
        assert segments[0].startswith("00:00:00.")
        assert page.text_content("#realtime-factor").endswith("x")
        with page.expect_download() as srt:
            page.click("#download-srt")
        subtitle = Path(srt.value.path()).read_text()
        assert subtitle.startswith("1\n00:00:0") and " --> " in subtitle
        assert "ask not what your country" in subtitle.lower()
        with page.expect_download() as vtt:
            page.click("#download-vtt")
        assert Path(vtt.value.path()).read_text().startswith("WEBVTT\n\n00:00:0")
    finally:
        browser.close()
    print(f"\nscreenshot: {tmp_path / 'upload.png'}")


def test_microphone_streams_to_the_realtime_endpoint(real_service, sync_playwright, tmp_path):
    require_speech()
    speech = decode_16k_mono(JFK)
    silence = np.zeros(16000 * 2, dtype=np.float32)
    capture = write_wav(tmp_path / "microphone.wav", np.concatenate([silence, speech, silence]))
    browser = launch(sync_playwright, "--use-fake-device-for-media-stream",
                     "--use-fake-ui-for-media-stream",
                     f"--use-file-for-fake-audio-capture={capture}")
    try:
        page = browser.new_page()
        page.goto(real_service.base_url + "/")
        page.click("#mic")
        page.wait_for_function(
            "[...document.querySelectorAll('#live p.final')].some(p => /country/i.test("
            "p.textContent))", timeout=120_000)
        page.screenshot(path=str(tmp_path / "microphone.png"), full_page=True)
        live = page.text_content("#live").lower()
        page.click("#mic")
    finally:
        browser.close()
    assert "your country can do for you" in live
    print(f"\nscreenshot: {tmp_path / 'microphone.png'}")
