"""``/v1/realtime`` with ``AMANUENSIS_API_KEY`` set: the key as a bearer header or as the
browser's ``openai-insecure-api-key.<key>`` subprotocol opens a session; none or a wrong one is
refused before the session starts. A second app on the already loaded engine serves it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest
import uvicorn
import websockets
from pydantic import SecretStr

from app.service import create_app
from tests.streaming.conftest import wait_for

pytestmark = pytest.mark.slow

KEY = "realtime-test-key"


@pytest.fixture(scope="module")
def keyed_url(real_service, real_model_settings):
    settings = real_model_settings.model_copy(update={"api_key": SecretStr(KEY)})
    state = real_service.state
    app = create_app(settings, runtime=state.runtime, engine=state.engine)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="keyed-uvicorn")
    thread.start()
    try:
        wait_for(lambda: server.started, "uvicorn started")
        yield f"ws://127.0.0.1:{port}/v1/realtime"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        app.state.service.admission.close()


async def first_event(url: str, **options) -> dict:
    async with websockets.connect(url, **options) as client:
        return json.loads(await client.recv())


@pytest.mark.parametrize("options", [
    {"additional_headers": {"Authorization": f"Bearer {KEY}"}},
    {"subprotocols": [f"openai-insecure-api-key.{KEY}"]},
])
def test_the_right_key_opens_a_session(keyed_url, options):
    assert asyncio.run(first_event(keyed_url, **options))["type"] == \
        "transcription_session.created"


@pytest.mark.parametrize("options", [
    {}, {"additional_headers": {"Authorization": "Bearer wrong"}},
    {"subprotocols": ["openai-insecure-api-key.wrong"]},
])
def test_no_key_or_a_wrong_one_is_refused(keyed_url, options):
    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(first_event(keyed_url, **options))
    assert refused.value.response.status_code == 403
