"""Malformed requests against a live server: each gets its status, error type and a clear message,
and the server is fine afterwards (a good request succeeds, no temporary file is left behind).

The table lists what each request sends and what must come back; media are made in memory.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest

from app.errors import AudioTooLong, EmptyAudio, InvalidAudio, UnsupportedMedia
from npu.audio_spec import SAMPLE_RATE
from tests.synth_media import (
    encode_audio,
    float_wav,
    silent_flac,
    tone,
    video_only,
    wav_header_announcing,
    wav_pcm16,
)

TRANSCRIPTIONS = "/v1/audio/transcriptions"
TRANSCRIBE = "/transcribe"


@dataclass(frozen=True)
class Case:
    """One request: multipart ``files``/``data`` (or a raw ``content``), and what must come back.

    ``status`` 200 means accepted; otherwise ``error_type`` and ``message`` (a substring) and,
    when given, ``param`` are checked in the error body.
    """

    name: str
    status: int
    error_type: str | None = None
    message: str | None = None
    param: str | None = None
    endpoint: str = TRANSCRIPTIONS
    file: tuple | None = None
    data: dict = field(default_factory=dict)
    content: bytes | Callable[[], Iterator[bytes]] | None = None
    headers: dict = field(default_factory=dict)
    method: str = "POST"
    text: str | None = None  # for accepted requests: the exact transcript, when known
    code: str | None = None  # the error body's code, when the case is about it


@functools.cache
def media() -> dict[str, bytes]:
    one_second = tone(1.0, SAMPLE_RATE)
    mp3 = encode_audio(tone(2, 44_100, 2), 44_100, container="mp3", codec="libmp3lame")
    flac = encode_audio(tone(2, SAMPLE_RATE), SAMPLE_RATE, container="flac", codec="flac")
    return {
        "wav": wav_pcm16(one_second, SAMPLE_RATE),
        "mp3_cut": mp3[: len(mp3) // 3],
        "mp3_head": mp3[:200],
        "flac_cut": flac[: len(flac) // 2],
        "flac_head": flac[:60],
        "video_only": video_only(),
        "video_with_audio": encode_audio(
            tone(2, 44_100, 2), 44_100, container="mp4", codec="aac", video=True
        ),
        "zero_samples": wav_header_announcing(0),
        "mulaw_8k": encode_audio(tone(2, 8_000), 8_000, container="wav", codec="pcm_mulaw"),
        "six_channel_48k": wav_pcm16(tone(1, 48_000, 6), 48_000),
        "gigabyte_header": wav_header_announcing(4 * 1024**3),
        "gigabyte_header_with_data": wav_header_announcing(4 * 1024**3)
        + (tone(1, SAMPLE_RATE)[0] * 32767).astype("<i2").tobytes(),
        "random": np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "four_hours_of_silent_flac": silent_flac(4 * 3600),  # over the default 3 h, ~30 KB
        "nan_wav": float_wav(with_sample(tone(1, 16_000), np.nan), 16_000),
        "inf_wav_44k_stereo": float_wav(with_sample(tone(1, 44_100, 2), np.inf), 44_100),
    }


def with_sample(samples: np.ndarray, value: float) -> np.ndarray:
    """``samples`` with one sample in the middle of each channel replaced by ``value``."""
    samples[:, samples.shape[1] // 2] = value
    return samples


def wav_file(name: str = "speech.wav", content_type: str = "audio/wav") -> tuple:
    return (name, media()["wav"], content_type)


@functools.cache
def two_hours_of_silence() -> bytes:
    """Encoded only when the (slow) case that sends it runs."""
    return encode_audio(
        np.zeros((1, SAMPLE_RATE * 7200), np.float32), SAMPLE_RATE, container="flac", codec="flac"
    )


def upload(key: str, name: str = "upload.bin") -> tuple:
    return (name, media()[key], "application/octet-stream")


CASES = [
    Case("empty body", 400, "invalid_request_error", "file", param="file", content=b""),
    Case("no file field", 400, "invalid_request_error", "file", param="file",
         data={"model": "whisper-1"}),
    Case("file sent as a text field", 400, "invalid_request_error", "file", param="file",
         data={"file": "not a file"}),
    Case("zero-byte file", 400, "invalid_request_error", "empty", param="file",
         code="empty_audio", file=("empty.wav", b"", "audio/wav")),
    Case("one byte", 415, "invalid_request_error", "could not be decoded", param="file",
         file=("one.wav", b"\x00", "audio/wav")),
    Case("random bytes", 415, "invalid_request_error", "could not be decoded", param="file",
         code="unsupported_media", file=lambda: upload("random")),
    Case("text named .wav", 415, "invalid_request_error", "could not be decoded", param="file",
         file=("notes.wav", b"Meeting notes: buy milk.\n" * 40, "audio/wav")),
    Case("WAV header announcing 4 GB, no data", 400, "invalid_request_error", "no audio samples",
         param="file", file=lambda: upload("gigabyte_header", "huge.wav")),
    Case("WAV header announcing 4 GB, 1 s of data", 200,
         file=lambda: upload("gigabyte_header_with_data", "huge.wav")),
    Case("truncated MP3 (first third)", 200, file=lambda: upload("mp3_cut", "cut.mp3")),
    Case("MP3 cut after 200 bytes", 415, "invalid_request_error", "could not be decoded",
         param="file", file=lambda: upload("mp3_head", "head.mp3")),
    Case("truncated FLAC (first half)", 415, "invalid_request_error", "decode_frame",
         param="file", file=lambda: upload("flac_cut", "cut.flac")),
    Case("FLAC cut inside its header", 415, "invalid_request_error", "could not be decoded",
         param="file", file=lambda: upload("flac_head", "head.flac")),
    Case("container with no audio stream", 400, "invalid_request_error", "no audio stream",
         param="file", file=lambda: upload("video_only", "screen.mp4")),
    Case("video with an audio track", 200, file=lambda: upload("video_with_audio", "talk.mp4")),
    Case("0-length audio", 400, "invalid_request_error", "no audio samples", param="file",
         file=lambda: upload("zero_samples", "nothing.wav")),
    Case("8 kHz mu-law", 200, file=lambda: upload("mulaw_8k", "phone.wav")),
    Case("48 kHz 6-channel", 200, file=lambda: upload("six_channel_48k", "surround.wav")),
    pytest.param(
        Case("2 hours of silence", 200, text="",
             file=lambda: ("silence.flac", two_hours_of_silence(), "application/octet-stream")),
        marks=pytest.mark.slow,  # encoding and decoding two hours of audio
    ),
    Case("four hours of silent FLAC in 30 KB (a decompression bomb)", 413,
         "invalid_request_error", "AMANUENSIS_MAX_AUDIO_SECONDS", param="file",
         code="audio_too_long", file=lambda: upload("four_hours_of_silent_flac", "bomb.flac")),
    Case("float WAV with a NaN sample", 400, "invalid_request_error", "not finite",
         param="file", code="invalid_audio", file=lambda: upload("nan_wav", "nan.wav")),
    Case("44.1 kHz stereo float WAV with an infinite sample", 400, "invalid_request_error",
         "not finite", param="file", code="invalid_audio",
         file=lambda: upload("inf_wav_44k_stereo", "inf.wav")),
    Case("unknown response_format", 400, "invalid_request_error", "response_format",
         param="response_format", file=wav_file, data={"response_format": "mp3"}),
    Case("bad language", 400, "invalid_request_error", "'xx' is not one this model knows",
         param="language", file=wav_file, data={"language": "xx"}),
    Case("language as a name", 400, "invalid_request_error", "not one this model knows",
         param="language", file=wav_file, data={"language": "english"}),
    Case("negative temperature", 400, "invalid_request_error", "temperature",
         param="temperature", file=wav_file, data={"temperature": "-0.5"}),
    Case("temperature not a number", 400, "invalid_request_error", "temperature",
         param="temperature", file=wav_file, data={"temperature": "warm"}),
    Case("huge prompt (only its end is used, as in Whisper)", 200, file=wav_file,
         data={"prompt": "word " * 20_000}),
    Case("unicode file name", 200, file=lambda: wav_file("録音 \U0001f3a4 ñ.wav")),
    Case("file name with path separators", 200,
         file=lambda: wav_file("../../../etc/passwd/..\\..\\boot.ini")),
    Case("4 KB file name", 200, file=lambda: wav_file("a" * 4096 + ".wav")),
    Case("file part declared text/plain", 200, file=lambda: wav_file("x.wav", "text/plain")),
    Case("JSON body instead of multipart", 400, "invalid_request_error", "file", param="file",
         content=b'{"file": "speech.wav"}', headers={"Content-Type": "application/json"}),
    Case("multipart with a broken boundary", 400, "invalid_request_error", "",
         content=b"--nope\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc",
         headers={"Content-Type": "multipart/form-data; boundary=other"}),
    Case("word granularity without verbose_json", 400, "invalid_request_error",
         "verbose_json", param="timestamp_granularities", file=wav_file,
         data={"timestamp_granularities[]": "word"}),
    Case("unknown granularity", 400, "invalid_request_error", "timestamp_granularities",
         file=wav_file, data={"timestamp_granularities[]": "sentence",
                              "response_format": "verbose_json"}),
    Case("/transcribe unknown task", 400, "invalid_request_error", "task", param="task",
         endpoint=TRANSCRIBE, file=wav_file, data={"task": "summarize"}),
    Case("/transcribe batch_size 0", 400, "invalid_request_error", "batch_size",
         param="batch_size", endpoint=TRANSCRIBE, file=wav_file, data={"batch_size": "0"}),
    Case("/transcribe word_timestamps not a bool", 400, "invalid_request_error",
         "word_timestamps", param="word_timestamps", endpoint=TRANSCRIBE, file=wav_file,
         data={"word_timestamps": "maybe"}),
    Case("upload over the size limit", 413, "invalid_request_error", "upload limit",
         file=("big.wav", b"\x00" * 5_000_000, "audio/wav")),
    Case("chunked upload over the size limit", 413, "invalid_request_error", "upload limit",
         content=lambda: chunked_upload(50 * 100_000),
         headers={"Content-Type": "multipart/form-data; boundary=xyz"}),
    Case("GET on the upload route", 405, "invalid_request_error", "Method Not Allowed",
         method="GET"),
]  # fmt: skip


def chunked_upload(size: int):
    """A multipart body with no Content-Length: httpx sends a generator chunked."""
    yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    for _ in range(size // 100_000):
        yield b"\0" * 100_000
    yield b"\r\n--xyz--\r\n"


def send(client: httpx.Client, case: Case) -> httpx.Response:
    if case.method != "POST":
        return client.request(case.method, case.endpoint)
    if case.content is not None:
        content = case.content() if callable(case.content) else case.content
        return client.post(case.endpoint, content=content, headers=case.headers)
    files = None
    if case.file is not None:
        part = case.file() if callable(case.file) else case.file
        files = {"file": part}
    data = {"model": "whisper-1", **case.data} if case.endpoint == TRANSCRIPTIONS else case.data
    return client.post(case.endpoint, files=files, data=data, headers=case.headers)


@pytest.fixture(scope="module")
def client(live_server: str):
    with httpx.Client(base_url=live_server, timeout=600) as http:
        yield http


def test_the_table_covers_every_error_the_decoder_raises_and_names_each_case_once():
    decoder_errors = {EmptyAudio, UnsupportedMedia, AudioTooLong, InvalidAudio}
    statuses = {(error.status_code, error.code) for error in decoder_errors}
    covered = {(case_of(entry).status, case_of(entry).code) for entry in CASES}
    assert statuses <= covered
    assert len({case_of(entry).name for entry in CASES}) == len(CASES)


def case_of(entry) -> Case:
    return entry.values[0] if hasattr(entry, "values") else entry


@pytest.mark.parametrize("case", CASES, ids=[case_of(entry).name for entry in CASES])
def test_malformed_request_gets_a_clear_answer_then_a_good_request_succeeds(client, case):
    response = send(client, case)
    assert response.status_code == case.status, response.text[:500]
    if case.status == 200:
        body = response.json()
        assert isinstance(body["text"], str)
        if case.text is not None:
            assert body["text"] == case.text
    else:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == case.error_type
        assert case.message.lower() in error["message"].lower()
        if case.param is not None:
            assert error["param"] == case.param
        if case.code is not None:
            assert error["code"] == case.code
    good = client.post(TRANSCRIPTIONS, files={"file": wav_file()}, data={"model": "whisper-1"})
    assert good.status_code == 200, good.text[:500]
    assert isinstance(good.json()["text"], str)


def test_requests_leave_no_temporary_files(start_service, tiny_env, tmp_path):
    """Upload names never reach the file system and spooled uploads are removed.

    The server gets a temp dir of its own, so nothing else on the machine writes there. A 3 MB
    upload is over Starlette's 1 MB in-memory limit, so it is spooled to a real file.
    """
    server_tmp = tmp_path / "server-tmp"
    server_tmp.mkdir()
    server = start_service({**tiny_env, "TMPDIR": str(server_tmp)})
    before = set(os.listdir(server_tmp))
    big = wav_pcm16(tone(90, SAMPLE_RATE), SAMPLE_RATE)
    assert len(big) > 1024 * 1024
    with httpx.Client(base_url=server.base_url, timeout=600) as http:
        accepted = http.post(
            TRANSCRIPTIONS,
            files={"file": ("../../evil name \U0001f3a4.wav", big, "audio/wav")},
            data={"model": "whisper-1"},
        )
        assert accepted.status_code == 200, accepted.text[:300]
        refused = http.post(
            TRANSCRIPTIONS,
            files={"file": ("junk.wav", b"\x01" * (2 * 1024 * 1024), "audio/wav")},
            data={"model": "whisper-1"},
        )
        assert refused.status_code == 415
    assert set(os.listdir(server_tmp)) == before
    assert not list(tmp_path.rglob("*evil*"))


# A server with an API key and a single slot: the cases that need them. (A request past its
# deadline, stopped within a chunk, is in test_abandoned_work.py, on the real model.)
API_KEY = "table-key"
AUTHORIZED = {"Authorization": f"Bearer {API_KEY}"}


GUARDED_CASES = [
    Case("no API key", 401, "authentication_error", "requires an API key", code="invalid_api_key",
         file=wav_file),
    Case("wrong API key", 401, "authentication_error", "not valid", code="invalid_api_key",
         file=wav_file, headers={"Authorization": "Bearer not-the-key"}),
    Case("API key sent as Basic", 401, "authentication_error", "requires an API key",
         file=wav_file, headers={"Authorization": f"Basic {API_KEY}"}),
    Case("wrong API key with a 3 MB upload", 401, "authentication_error", "not valid",
         file=("big.wav", b"\x00" * 3_000_000, "audio/wav"),
         headers={"Authorization": "Bearer not-the-key"}),
]  # fmt: skip


@pytest.fixture(scope="module")
def guarded(start_service, tiny_env):
    server = start_service({
        **tiny_env, "AMANUENSIS_API_KEY": API_KEY, "AMANUENSIS_MAX_CONCURRENT": "1",
        "AMANUENSIS_MAX_QUEUE": "1"})
    with httpx.Client(base_url=server.base_url, timeout=600) as http:
        yield http


def slot_free(client: httpx.Client) -> None:
    for _ in range(3000):
        if client.get("/status").json()["concurrency"]["running"] == 0:
            return
        threading.Event().wait(0.1)
    raise AssertionError("the server never gave its slot back")


@pytest.mark.parametrize("case", GUARDED_CASES, ids=[case_of(entry).name for entry in GUARDED_CASES])
def test_unauthenticated_request_is_refused_then_a_good_request_succeeds(guarded, case):
    response = send(guarded, case)
    assert response.status_code == case.status, response.text[:500]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == case.error_type
    assert case.message.lower() in error["message"].lower()
    if case.code is not None:
        assert error["code"] == case.code
    slot_free(guarded)
    good = guarded.post(TRANSCRIPTIONS, files={"file": wav_file()}, data={"model": "whisper-1"},
                        headers=AUTHORIZED)
    assert good.status_code == 200, good.text[:500]
    assert isinstance(good.json()["text"], str)


def test_a_wrong_key_is_refused_before_the_body_arrives(guarded):
    """Headers announcing 3 MB, and no body sent at all: the 401 comes anyway."""
    host, port = str(guarded.base_url).split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as raw:
        raw.sendall((f"POST {TRANSCRIPTIONS} HTTP/1.1\r\nHost: {host}\r\n"
                     "Authorization: Bearer not-the-key\r\n"
                     "Content-Type: multipart/form-data; boundary=x\r\n"
                     "Content-Length: 3000000\r\n\r\n").encode())
        answer = b""
        while chunk := raw.recv(65_536):  # the server answers, then closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"invalid_api_key" in answer
