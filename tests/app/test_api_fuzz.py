"""schemathesis against the live service's ``/openapi.json``: generated requests to every
operation, valid and invalid, never get a 5xx, and every answer matches the schema (status
documented, body of the documented shape, content type documented).

Random bytes almost never decode as audio, so half the generated uploads carry a real 1 s WAV
instead: the success paths (every response format, language, prompt...) are fuzzed too.
The example count is bounded so the run fits in ``make test``; the server is the real uvicorn
process on the tiny model. Each operation's strategy comes from the schema served live (the
lazy ``schemathesis.pytest.from_fixture`` loader does not run under pytest 9).
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from app.api import jobs, monitoring, transcriptions
from npu.audio_spec import SAMPLE_RATE
from tests.synth_media import tone, wav_pcm16

EXAMPLES_PER_OPERATION = 25
REQUEST_TIMEOUT_S = 60
AUDIO = wav_pcm16(tone(1.0, SAMPLE_RATE), SAMPLE_RATE)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
OPERATIONS = sorted(
    (route.path, method)
    for route in [*transcriptions.router.routes, *jobs.router.routes, *monitoring.router.routes]
    if isinstance(route, APIRoute)
    for method in route.methods
)


@pytest.fixture(scope="module")
def api_schema(live_server: str):
    return schemathesis.openapi.from_url(f"{live_server}/openapi.json")


def test_the_schema_lists_every_route(api_schema):
    served = {(path, method.upper()) for path, methods in api_schema.raw_schema["paths"].items()
              for method in methods}
    assert served == set(OPERATIONS)


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_generated_requests_get_documented_answers_and_no_5xx(api_schema, path, method):
    operation = api_schema[path][method]
    strategy = (operation.as_strategy(GenerationMode.POSITIVE)
                | operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=strategy, real_audio=st.booleans())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.function_scoped_fixture])
    def answers_within_the_schema(case, real_audio):
        if real_audio and isinstance(case.body, dict) and "file" in case.body:
            case.body = {**case.body, "file": AUDIO}
        case.call_and_validate(checks=CHECKS, timeout=REQUEST_TIMEOUT_S)

    answers_within_the_schema()
