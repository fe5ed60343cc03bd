"""A generic JSON webhook, signed with HMAC-SHA256.

Each delivery is one POST of :func:`document` with these headers:

* ``X-Monitord-Timestamp``: the Unix time of the attempt, in seconds.
* ``X-Monitord-Signature: sha256=<hex>``: HMAC-SHA256, keyed with the shared secret, of
  ``<timestamp>.`` followed by the exact body bytes. The timestamp is inside the signed
  text, so a receiver that checks the signature and rejects stale timestamps (say, older
  than five minutes) cannot be fed a replayed request.
* ``X-Monitord-Dedup-Key`` and ``X-Monitord-Action``: what the body says, for routing.

Any 2xx is success; 408, 425, 429 and 5xx are retried; other statuses are not.
To verify, see :func:`verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Callable, Literal

from pydantic import Field

from monitord.shared.fields import SecretRef
from remediation.pagers.base import HttpClient, HttpUrl, Integration, IntegrationBase, Message, read_secret

SIGNATURE_HEADER = "X-Monitord-Signature"
TIMESTAMP_HEADER = "X-Monitord-Timestamp"


class WebhookConfig(IntegrationBase):
    """A JSON endpoint of your own, with a shared signing secret."""

    type: Literal["webhook"]
    url: HttpUrl
    secret: SecretRef = Field(description="HMAC-SHA256 key shared with the receiver")


def document(message: Message) -> dict:
    """The JSON body (version 1)."""
    return {"version": 1, "dedup_key": message.dedup_key, "action": message.action, "severity": message.severity,
            "summary": message.summary, "source": message.source, "body": message.body,
            "details": dict(message.details), "at": message.at}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, now: float, tolerance: float = 300.0) -> bool:
    """What a receiver should check: the signature matches and the timestamp is fresh."""
    try:
        fresh = abs(now - int(timestamp)) <= tolerance
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookPager:
    """Posts signed JSON to one URL."""

    def __init__(self, config: WebhookConfig, http: HttpClient, now: Callable[[], float] = time.time):
        self.config, self.http, self.timeout, self._now = config, http, config.timeout, now

    async def send(self, message: Message) -> str:
        """POST the signed document; any 2xx is success."""
        body = json.dumps(document(message), ensure_ascii=False, sort_keys=True).encode()
        timestamp = str(int(self._now()))
        signature = sign(read_secret(self.config.secret), timestamp, body)
        headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature,
                   "X-Monitord-Dedup-Key": message.dedup_key, "X-Monitord-Action": message.action}
        reply = await self.http.post(self.config.url, data=body, headers=headers, timeout=self.timeout,
                                     ok=set(range(200, 300)))
        return f"webhook answered {reply.status}"


INTEGRATION = Integration("webhook", WebhookConfig, WebhookPager, "generic JSON webhook (HMAC-SHA256 signed)")
