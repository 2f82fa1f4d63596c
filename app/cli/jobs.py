"""``amanuensis jobs submit|status|result``: durable jobs against a running service.

``submit FILE... [--wait]`` prints each job's id (and, with ``--wait``, shows a progress bar per
job from its reported audio seconds until it ends); ``status ID`` prints the job's document;
``result ID --format srt`` prints its transcript. The API key comes from ``AMANUENSIS_API_KEY``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
POLL_SECONDS = 0.5


def register(commands, bench) -> None:
    parser = commands.add_parser("jobs", help="submit and follow jobs on a running service")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    submit = actions.add_parser("submit", help="submit audio files as jobs")
    submit.add_argument("files", nargs="+", type=Path, metavar="FILE")
    submit.add_argument("--language", default=None)
    submit.add_argument("--callback-url", default=None)
    submit.add_argument("--wait", action="store_true", help="follow the jobs until they end")
    submit.set_defaults(handler=run_submit)
    status = actions.add_parser("status", help="a job's status document")
    status.add_argument("job_id", metavar="ID")
    status.set_defaults(handler=run_status)
    result = actions.add_parser("result", help="a finished job's transcript")
    result.add_argument("job_id", metavar="ID")
    result.add_argument("--format", choices=FORMATS, default="text")
    result.set_defaults(handler=run_result)


def _client(args: argparse.Namespace):
    import httpx

    key = os.environ.get("AMANUENSIS_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=args.url, headers=headers, timeout=300)


def _failed(response) -> bool:
    if response.is_success:
        return False
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    print(f"error {response.status_code}: {message}", file=sys.stderr)
    return True


def run_submit(args: argparse.Namespace) -> int:
    data = {key: value for key, value in (("language", args.language),
                                           ("callback_url", args.callback_url)) if value}
    job_ids, failures = [], 0
    with _client(args) as client:
        for path in args.files:
            with path.open("rb") as audio:
                response = client.post("/v1/jobs", files={"file": (path.name, audio)}, data=data)
            if _failed(response):
                failures += 1
                continue
            job_ids.append(response.json()["id"])
            print(response.json()["id"])
        if args.wait:
            failures += sum(_follow(client, job_id) != "succeeded" for job_id in job_ids)
    return 1 if failures else 0


def _follow(client, job_id: str) -> str:
    """Show a progress bar of the job's audio seconds until it ends; its final status."""
    from tqdm import tqdm

    job = client.get(f"/v1/jobs/{job_id}").json()
    with tqdm(desc=job_id, total=job["progress"]["total_seconds"], unit="s", file=sys.stderr,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s") as bar:
        while True:
            bar.update(job["progress"]["audio_seconds"] - bar.n)
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(POLL_SECONDS)
            job = client.get(f"/v1/jobs/{job_id}").json()
    if job["status"] != "succeeded":
        print(f"{job_id}: {job['status']} {job.get('error') or ''}".rstrip(), file=sys.stderr)
    return job["status"]


def run_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        response = client.get(f"/v1/jobs/{args.job_id}")
    if _failed(response):
        return 1
    print(json.dumps(response.json(), indent=2))
    return 0


def run_result(args: argparse.Namespace) -> int:
    with _client(args) as client:
        response = client.get(f"/v1/jobs/{args.job_id}/result",
                              params={"response_format": args.format})
    if _failed(response):
        return 1
    sys.stdout.write(response.text if args.format in ("text", "srt", "vtt")
                     else json.dumps(response.json(), indent=2) + "\n")
    return 0
