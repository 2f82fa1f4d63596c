"""The service over real HTTP, through the official ``openai`` client and httpx."""

from __future__ import annotations

import re
import socket
import time
from urllib.parse import urlparse

import httpx
import openai
import pytest
from openai.types.audio import Transcription, TranscriptionVerbose

from app.api.formatting import MEDIA_TYPES
from tests.app.service_helpers import clip, soundfile_duration, video_only_file

SUBTITLE_TIME = r"(\d\d:)?\d\d:\d\d[.,]\d\d\d"


@pytest.fixture(scope="module")
def client(live_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server + "/v1", api_key="not-needed", max_retries=0)


@pytest.fixture(scope="module")
def jfk():
    return clip("jfk")


def assert_error(response: httpx.Response, status: int, code: str, param: str | None = None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


# ---- response formats ---------------------------------------------------------------------


def test_json(client, jfk):
    result = client.audio.transcriptions.create(model="whisper-1", file=jfk.open("rb"))
    assert isinstance(result, Transcription)
    assert result.text.strip()


def test_verbose_json_parses_in_the_sdk(client, jfk):
    result = client.audio.transcriptions.create(
        model="whisper-1", file=jfk.open("rb"), response_format="verbose_json")
    assert isinstance(result, TranscriptionVerbose)
    assert isinstance(result.duration, float)
    assert result.duration == pytest.approx(soundfile_duration(jfk), abs=1e-3)
    assert result.segments
    for index, segment in enumerate(result.segments):
        assert segment.id == index
        assert 0 <= segment.start < segment.end <= result.duration
        assert segment.tokens and all(isinstance(token, int) for token in segment.tokens)
        assert segment.seek == round(segment.start * 100)
        assert 0.0 <= segment.no_speech_prob <= 1.0
        assert segment.avg_logprob < 0 and segment.compression_ratio > 0
    assert result.text == "".join(s.text for s in result.segments).strip()
    assert result.words is None


def test_verbose_json_with_words(client, jfk):
    result = client.audio.transcriptions.create(
        model="whisper-1", file=jfk.open("rb"), response_format="verbose_json",
        timestamp_granularities=["word", "segment"])
    assert result.words and result.segments
    assert [w.word for w in result.words] == " ".join(s.text for s in result.segments).split()
    for word in result.words:
        assert 0 <= word.start <= word.end <= result.duration


@pytest.mark.parametrize("response_format", ["text", "srt", "vtt"])
def test_text_formats_have_their_media_types(client, jfk, response_format):
    raw = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=jfk.open("rb"), response_format=response_format)
    assert raw.headers["content-type"].split(";")[0] == MEDIA_TYPES[response_format]
    body = raw.parse()
    assert isinstance(body, str)
    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=jfk.open("rb"), response_format="verbose_json")
    if response_format == "text":
        assert body.strip() == verbose.text
        return
    cues = re.findall(rf"({SUBTITLE_TIME}) --> ({SUBTITLE_TIME})\n(.+)", body)
    assert len(cues) == len(verbose.segments)
    for (start, _, end, _, text), segment in zip(cues, verbose.segments):
        assert _seconds(start) == pytest.approx(segment.start, abs=1e-3)
        assert _seconds(end) == pytest.approx(segment.end, abs=1e-3)
        assert text == segment.text.strip()
    assert body.startswith("WEBVTT") == (response_format == "vtt")


def _seconds(stamp: str) -> float:
    parts = stamp.replace(",", ".").split(":")
    return sum(float(part) * 60 ** power for power, part in enumerate(reversed(parts)))


def test_translation(client, jfk):
    result = client.audio.translations.create(model="whisper-1", file=jfk.open("rb"),
                                              response_format="verbose_json")
    assert result.segments and result.text.strip()
    assert result.to_dict()["task"] == "translate"


def test_bracketed_and_plain_granularity_spellings(live_server, jfk):
    for field in ("timestamp_granularities[]", "timestamp_granularities"):
        response = httpx.post(live_server + "/v1/audio/transcriptions", timeout=120,
                              files={"file": jfk.open("rb")},
                              data={"response_format": "verbose_json", field: "word"})
        assert response.status_code == 200, response.text
        assert response.json()["words"]
        assert response.json()["word_timestamps_method"] == "wav2vec2"
        assert "segments" not in response.json()


def test_models(client, tiny_model_dir):
    assert [model.id for model in client.models.list().data] == [tiny_model_dir.name]


@pytest.mark.parametrize("response_format", ["json", "verbose_json"])
def test_transcribe_endpoint_json(live_server, jfk, response_format):
    response = httpx.post(live_server + "/transcribe", timeout=120, files={"file": jfk.open("rb")},
                          data={"response_format": response_format, "word_timestamps": "true",
                                "language": "en", "batch_size": "2"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["language"] == "en"
    assert body["duration"] == pytest.approx(soundfile_duration(jfk), abs=1e-3)
    assert body["mel_backend"] == "cpu"
    assert isinstance(body["realtime_factor"], float)
    assert body["realtime_factor"] == pytest.approx(body["duration"] / body["processing_time"])
    assert body["segments"] and all(segment["words"] for segment in body["segments"])
    assert ("tokens" in body["segments"][0]) == (response_format == "verbose_json")


@pytest.mark.parametrize("response_format", ["text", "srt", "vtt"])
def test_transcribe_endpoint_text_formats(live_server, jfk, response_format):
    response = httpx.post(live_server + "/transcribe", timeout=120, files={"file": jfk.open("rb")},
                          data={"response_format": response_format})
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == MEDIA_TYPES[response_format]


def test_every_shared_speech_file_decodes_and_transcribes(live_server):
    from tests.speech import speech_files

    for path in speech_files():
        response = httpx.post(live_server + "/transcribe", timeout=300,
                              files={"file": path.open("rb")})
        assert response.status_code == 200, f"{path.name}: {response.text}"
        body = response.json()
        assert body["duration"] == pytest.approx(soundfile_duration(path), abs=2e-3), path.name
        assert body["text"].strip(), f"{path.name}: empty transcript"


def test_silence_gives_an_empty_transcript(live_server):
    from tests.app.service_helpers import sine_file

    silence = sine_file("wav", "pcm_s16le", rate=16000, layout="mono", seconds=3.0, amplitude=0)
    response = httpx.post(live_server + "/transcribe", timeout=60, files={"file": silence})
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "" and response.json()["segments"] == []


# ---- errors -------------------------------------------------------------------------------


def test_empty_file_is_400(client, live_server):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("empty.wav", b""))
    assert caught.value.code == "empty_audio" and caught.value.param == "file"
    assert_error(httpx.post(live_server + "/transcribe", files={"file": ("e.wav", b"")}),
                 400, "empty_audio", "file")


def test_no_audio_stream_is_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("v.mp4", video_only_file()))
    assert caught.value.code == "empty_audio"
    assert "no audio stream" in caught.value.message


def test_undecodable_is_415(client, live_server):
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("x.mp3", b"not audio" * 50))
    assert caught.value.status_code == 415 and caught.value.code == "unsupported_media"


@pytest.mark.parametrize(("data", "param"), [
    ({"response_format": "docx"}, "response_format"),
    ({"language": "xx"}, "language"),
    ({"timestamp_granularities[]": "word"}, "timestamp_granularities"),
    ({"timestamp_granularities[]": "phoneme", "response_format": "verbose_json"},
     "timestamp_granularities[].0"),
    ({"temperature": "3"}, "temperature"),
])
def test_bad_fields_are_400(live_server, jfk, data, param):
    response = httpx.post(live_server + "/v1/audio/transcriptions", timeout=60,
                          files={"file": jfk.open("rb")}, data=data)
    assert_error(response, 400, "invalid_request", param)


def test_missing_file_is_400(live_server):
    response = httpx.post(live_server + "/v1/audio/transcriptions", data={"model": "whisper-1"})
    assert_error(response, 400, "invalid_request", "file")


def test_over_the_size_limit_is_413_without_reading_the_body(live_server):
    """Content-Length says 50 MB (the limit is 4 MB); only the headers and a few bytes are sent
    and the 413 comes back anyway."""
    url = urlparse(live_server)
    with socket.create_connection((url.hostname, url.port), timeout=30) as connection:
        connection.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n"
            b"Content-Length: 50000000\r\n\r\n--xyz\r\n")
        reply = _read_response(connection)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b'"code":"upload_too_large"' in body


def _read_response(connection: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    length = int(re.search(r"content-length: (\d+)", head, re.IGNORECASE).group(1))
    while len(data.split(b"\r\n\r\n", 1)[1]) < length:
        data += connection.recv(65536)
    return data


def test_streamed_upload_over_the_limit_is_413(live_server):
    def chunks():
        yield (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
               b"Content-Type: audio/wav\r\n\r\n")
        for _ in range(80):
            yield b"\1" * 65536  # 5 MB in all, no Content-Length (chunked)

    response = httpx.post(live_server + "/transcribe", content=chunks(), timeout=60,
                          headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert_error(response, 413, "upload_too_large")


def test_unknown_path_and_wrong_method(live_server):
    assert_error(httpx.get(live_server + "/v2/nothing"), 404, "not_found")
    assert_error(httpx.get(live_server + "/v1/audio/transcriptions"), 405, "method_not_allowed")


def test_words_without_an_alignment_model_is_422(start_service, tiny_env, jfk):
    server = start_service({**tiny_env, "AMANUENSIS_ALIGN_MODEL": "/nonexistent/aligner"})
    response = httpx.post(server.base_url + "/v1/audio/transcriptions", timeout=120,
                          files={"file": jfk.open("rb")},
                          data={"response_format": "verbose_json",
                                "timestamp_granularities[]": "word"})
    error = assert_error(response, 422, "alignment_model_unavailable", "timestamp_granularities")
    assert "/nonexistent/aligner" in error["message"]
    assert "AMANUENSIS_ALIGN_MODEL" in error["message"]
    plain = httpx.post(server.base_url + "/v1/audio/transcriptions", timeout=120,
                       files={"file": jfk.open("rb")})
    assert plain.status_code == 200


# ---- health and readiness -----------------------------------------------------------------


def test_ready_is_503_until_loaded_then_200(start_service, tiny_env):
    server = start_service(tiny_env, wait_ready=False)
    seen = []
    while not seen or seen[-1][0] != 200:
        response = httpx.get(server.base_url + "/ready", timeout=10)
        seen.append((response.status_code, response.json()))
    assert seen[0][0] == 503, "the model was ready before the first /ready answered"
    assert seen[0][1]["error"]["code"] == "model_loading"
    assert {status for status, _ in seen[:-1]} == {503}
    assert seen[-1][1]["status"] == "ready"


def test_model_that_cannot_load_leaves_the_process_up(start_service, tiny_env, jfk):
    server = start_service({**tiny_env, "AMANUENSIS_MODEL": "no-such-model-anywhere"},
                           wait_ready=False)
    while httpx.get(server.base_url + "/status").json()["problem"] == "the model is still loading":
        time.sleep(0.05)
    assert httpx.get(server.base_url + "/health").status_code == 200
    error = assert_error(httpx.get(server.base_url + "/ready"), 503, "model_unavailable")
    assert "no-such-model-anywhere" in error["message"] and "Fix:" in error["message"]
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=jfk.open("rb"))
    assert caught.value.status_code == 503 and caught.value.code == "model_unavailable"
    assert server.log().count("no-such-model-anywhere' could not be loaded") == 1


def test_status(live_server, tiny_model_dir):
    status = httpx.get(live_server + "/status").json()
    assert status["model"] == tiny_model_dir.name and status["ready"] is True
    assert status["model_source"] == str(tiny_model_dir) and status["english_only"] is False
    assert status["compute_type"] == "int8"
    assert status["mel_backend"] == "cpu" and status["mel_backend_reason"]
    assert set(status["mel_fallbacks"]) == {"no_device", "no_xrt", "no_kernel_artifacts",
                                            "load_failed", "run_failed", "bad_output"}
    assert status["uptime_seconds"] > 0
