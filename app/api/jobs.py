"""Job routes: ``POST /v1/jobs`` (the fields of ``/v1/audio/transcriptions`` plus
``callback_url``), ``GET /v1/jobs``, ``GET|DELETE /v1/jobs/{id}`` and ``GET /v1/jobs/{id}/result``
in any of the synchronous API's response formats."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from app.api.dependencies import State
from app.api.formatting import MEDIA_TYPES, ResponseFormat, openai_body, render_text
from app.api.transcriptions import (
    BracketGranularities,
    Granularities,
    Model,
    OpenAIFile,
    Prompt,
    Temperature,
    check_granularities,
)
from app.errors import NotReady, documented_errors
from app.jobs.records import JobStatus
from app.jobs.service import JobService
from app.jobs.webhooks import check_callback_url
from app.state import ServiceState

router = APIRouter(tags=["jobs"])
JOB_PATH_PREFIX = "/v1/jobs/"
"""Every path under it is a job route (``/v1/jobs/{job_id}``...): the API key gate protects
them by prefix."""
JOB_ERRORS = documented_errors(400, 401, 404, 503)


def job_service(state: ServiceState) -> JobService:
    if state.jobs is None:
        raise NotReady("jobs are not available yet", code="jobs_not_ready")
    return state.jobs


@router.post("/v1/jobs", status_code=202, summary="Submit audio as a durable transcription job",
             responses=documented_errors(400, 401, 413, 415, 429, 503))
async def submit_job(
    state: State,
    file: OpenAIFile,
    model: Model = None,
    language: Annotated[str | None, Form()] = None,
    prompt: Prompt = None,
    temperature: Temperature = 0.0,
    timestamp_granularities: Granularities = None,
    timestamp_granularities_brackets: BracketGranularities = None,
    callback_url: Annotated[str | None, Form(
        description="POSTed the job's status document when it ends")] = None,
) -> JSONResponse:
    jobs = job_service(state)
    granularities = [*(timestamp_granularities or []), *(timestamp_granularities_brackets or [])]
    check_granularities(granularities)
    if callback_url:
        check_callback_url(callback_url, state.settings.webhook_allowed_hosts)
    options = {"language": language or None, "task": "transcribe", "prompt": prompt or None,
               "words": "word" in granularities}
    data = await file.read()
    job = await run_in_threadpool(jobs.submit, data, filename=file.filename, options=options,
                                  callback_url=callback_url or None)
    return JSONResponse(job.document(), status_code=202,
                        headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("/v1/jobs", summary="Jobs, newest first", responses=JOB_ERRORS)
async def list_jobs(
    state: State,
    status: Annotated[JobStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[float | None, Query(
        description="the created_at of the last job of the previous page")] = None,
) -> dict:
    jobs = await run_in_threadpool(job_service(state).list, status=status.value if status else None,
                                   limit=limit, before=before)
    return {"object": "list", "data": [job.document() for job in jobs],
            "has_more": len(jobs) == limit,
            "next_before": jobs[-1].created_at if len(jobs) == limit else None}


@router.get("/v1/jobs/{job_id}", summary="A job's status and progress", responses=JOB_ERRORS)
async def get_job(state: State, job_id: str) -> dict:
    return (await run_in_threadpool(job_service(state).get, job_id)).document()


@router.delete("/v1/jobs/{job_id}", summary="Cancel a job, deleting its audio and result",
               responses=JOB_ERRORS)
async def delete_job(state: State, job_id: str) -> dict:
    job = await run_in_threadpool(job_service(state).delete, job_id)
    return {**job.document(), "deleted": True}


@router.get("/v1/jobs/{job_id}/result", summary="A finished job's transcript",
            responses={200: {"description": "The transcript in the requested format",
                             "content": {media: {} for media in MEDIA_TYPES.values()}},
                       **documented_errors(400, 401, 404, 409, 503)})
async def job_result(state: State, job_id: str,
                     response_format: Annotated[ResponseFormat, Query()] = "json") -> Response:
    jobs = job_service(state)
    transcription = await run_in_threadpool(jobs.result, job_id)
    if response_format in ("text", "srt", "vtt"):
        return render_text(transcription, response_format)
    words = (await run_in_threadpool(jobs.get, job_id)).options.get("words", False)
    return JSONResponse(openai_body(transcription, response_format, task="transcribe",
                                    words=words))
