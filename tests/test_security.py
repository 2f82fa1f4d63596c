"""The optional API key (bearer, constant-time, 401 in the error shape) and the CORS setting."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from app.api.security import ApiKeyGate, api_key_scheme, install_cors
from app.errors import install_error_handlers
from app.service import create_app
from app.settings import Settings

KEY = "s3cret-key-\u00e9"  # non-ASCII on purpose: compared as UTF-8
UPLOAD = "/v1/audio/transcriptions"


def make_app(api_key: str | None, origins: list[str] | None = None) -> FastAPI:
    """An app put together as the service's factory does: the gate, then CORS outside it."""
    app = FastAPI()
    install_error_handlers(app)
    if api_key:
        app.add_middleware(ApiKeyGate, api_key=api_key, protected=[UPLOAD])
    install_cors(app, origins or [])
    declared = Depends(api_key_scheme(api_key))

    @app.post(UPLOAD, dependencies=[declared])
    async def transcribe():
        return {"text": "hello"}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    return app


def test_without_a_key_everything_is_open_and_openapi_shows_no_scheme():
    with TestClient(make_app(None)) as client:
        assert client.post("/v1/audio/transcriptions").json() == {"text": "hello"}
        assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "requires an API key"),
        ({"Authorization": ""}, "requires an API key"),
        ({"Authorization": "Bearer"}, "requires an API key"),
        ({"Authorization": f"Basic {KEY}"}, "requires an API key"),
        ({"Authorization": "Bearer wrong"}, "not valid"),
        ({"Authorization": "Bearer s3cret-key-"}, "not valid"),  # a prefix of the key
        ({"Authorization": "Bearer s3cret-key-\u00e9x"}, "not valid"),  # the key plus one
        ({"Authorization": "Bearer S3CRET-KEY-\u00c9"}, "not valid"),
    ],
)
def test_with_a_key_requests_without_the_right_bearer_get_401(headers, message):
    encoded = {k: v.encode() for k, v in headers.items()}
    with TestClient(make_app(KEY)) as client:
        response = client.post("/v1/audio/transcriptions", headers=encoded)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["code"] == "invalid_api_key"
    assert error["param"] is None
    assert message in error["message"]
    assert KEY not in response.text


def test_the_right_bearer_key_passes_and_health_stays_open():
    with TestClient(make_app(KEY)) as client:
        ok = client.post(
            "/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {KEY}".encode()},
        )
        assert ok.status_code == 200 and ok.json() == {"text": "hello"}
        assert client.get("/health").status_code == 200
        schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
        assert schemes["HTTPBearer"]["scheme"] == "bearer"


def test_cors_is_off_by_default():
    with TestClient(make_app(None)) as client:
        response = client.get("/health", headers={"Origin": "https://example.org"})
        assert "access-control-allow-origin" not in response.headers
        preflight = client.options(
            "/v1/audio/transcriptions",
            headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_exactly_the_listed_origins():
    with TestClient(make_app(None, ["https://app.example.org"])) as client:
        allowed = client.options(
            "/v1/audio/transcriptions",
            headers={
                "Origin": "https://app.example.org",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization",
            },
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.org"
        other = client.get("/health", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in other.headers


def test_a_request_with_a_wrong_key_is_refused_before_its_body_is_read():
    """The service's own app, a 50 MB upload announced and offered chunk by chunk: the answer
    is a 401 and not one chunk is taken."""
    app = create_app(Settings(api_key=KEY, warmup=False, mel_backend="cpu"))
    chunk = b"\0" * 65_536
    taken = 0

    async def receive() -> dict:
        nonlocal taken
        taken += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": UPLOAD, "raw_path": UPLOAD.encode(),
             "root_path": "", "query_string": b"", "server": ("127.0.0.1", 8000),
             "client": ("127.0.0.1", 50000), "headers": [
                 (b"host", b"127.0.0.1"), (b"authorization", b"Bearer wrong"),
                 (b"content-type", b"multipart/form-data; boundary=x"),
                 (b"content-length", str(50 * 1024 * 1024).encode())]}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 401
    assert b"invalid_api_key" in b"".join(m.get("body", b"") for m in sent[1:])
    assert taken == 0
