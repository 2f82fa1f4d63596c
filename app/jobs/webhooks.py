"""Webhooks: when a job ends, its status document is POSTed to its ``callback_url``.

Only hosts in ``AMANUENSIS_WEBHOOK_ALLOWED_HOSTS`` may be called back (checked at submission, so a
client cannot make the service call anything it likes). Delivery is retried on a connection
error, a timeout or a non-2xx answer, waiting ``backoff``, then twice that, and so on, for at most
``max_attempts`` tries; the outcome (``delivered`` or ``failed``) and the attempts are recorded on
the job. With a secret the body is signed: ``X-Amanuensis-Signature: sha256=<hex HMAC-SHA256>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

import httpx

from app.errors import InvalidRequest

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Amanuensis-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_callback_url(url: str, allowed_hosts: list[str]) -> None:
    """400 unless ``url`` is http(s) to an allowed host."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidRequest("callback_url must be an http:// or https:// URL",
                             param="callback_url")
    if parsed.hostname.lower() not in {host.lower() for host in allowed_hosts}:
        raise InvalidRequest(
            f"callback_url host {parsed.hostname!r} is not allowed: the service calls back only "
            f"hosts listed in AMANUENSIS_WEBHOOK_ALLOWED_HOSTS", param="callback_url",
            code="callback_host_not_allowed")


@dataclass(frozen=True)
class WebhookPolicy:
    secret: str | None
    max_attempts: int
    backoff_seconds: float
    timeout_seconds: float


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    last_error: str | None


def deliver(url: str, document: dict, policy: WebhookPolicy,
            sleep: Callable[[float], None] = time.sleep) -> Delivery:
    """POST ``document`` to ``url`` until a 2xx answer or ``policy.max_attempts`` tries."""
    body = json.dumps(document, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json"}
    if policy.secret:
        headers[SIGNATURE_HEADER] = signature(policy.secret, body)
    last_error = None
    with httpx.Client(timeout=policy.timeout_seconds, follow_redirects=False) as client:
        for attempt in range(1, policy.max_attempts + 1):
            try:
                answer = client.post(url, content=body, headers=headers)
                if answer.is_success:
                    return Delivery(True, attempt, None)
                last_error = f"HTTP {answer.status_code}"
            except httpx.HTTPError as error:
                last_error = f"{type(error).__name__}: {error}"
            logger.warning("webhook %s attempt %d failed: %s", url, attempt, last_error)
            if attempt < policy.max_attempts:
                sleep(policy.backoff_seconds * 2 ** (attempt - 1))
    return Delivery(False, policy.max_attempts, last_error)
