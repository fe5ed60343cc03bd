"""PagerDuty Events API v2: trigger, acknowledge and resolve an alert by its dedup key.

One POST per event to ``/v2/enqueue`` with the integration's routing key. PagerDuty answers
202 when it accepted the event, 400 for a bad payload or key (not retryable), 429 when the
integration is rate limited and 5xx on its own trouble (both retryable). Events with the
same ``dedup_key`` land on the same alert, so a duplicate trigger after a crash is harmless.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import Field

from monitord.shared.fields import SecretRef
from remediation.pagers.base import HttpClient, HttpUrl, Integration, IntegrationBase, Message, read_secret

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
SUMMARY_MAX = 1024


class PagerDutyConfig(IntegrationBase):
    """A PagerDuty service's Events API v2 integration."""

    type: Literal["pagerduty"]
    routing_key: SecretRef = Field(description="the integration key (routing key) of the service")
    url: HttpUrl = DEFAULT_URL
    component: str | None = None
    group: str | None = None
    webhook_secret: SecretRef | None = Field(
        default=None, description="the signing secret of the V3 webhook subscription that posts to /api/v1/pagerduty")


def event(message: Message, routing_key: str, config: PagerDutyConfig) -> dict:
    """The Events API v2 body for ``message``."""
    body: dict = {"routing_key": routing_key, "event_action": message.action, "dedup_key": message.dedup_key,
                  "client": "monitord"}
    if message.action == "trigger":
        payload: dict = {"summary": message.summary[:SUMMARY_MAX], "source": message.source,
                         "severity": message.severity}
        details = dict(message.details)
        if message.body:
            details["body"] = message.body
        if details:
            payload["custom_details"] = details
        if message.at is not None:
            payload["timestamp"] = datetime.fromtimestamp(message.at, timezone.utc).isoformat(timespec="seconds")
        for key in ("component", "group"):
            if getattr(config, key):
                payload[key] = getattr(config, key)
        body["payload"] = payload
    return body


class PagerDutyPager:
    """Sends events to one PagerDuty integration."""

    def __init__(self, config: PagerDutyConfig, http: HttpClient):
        self.config, self.http, self.timeout = config, http, config.timeout

    async def send(self, message: Message) -> str:
        """POST the event; 202 means accepted."""
        body = event(message, read_secret(self.config.routing_key), self.config)
        await self.http.post(self.config.url, body, timeout=self.timeout, ok={202})
        return f"pagerduty accepted {message.action} {message.dedup_key}"


INTEGRATION = Integration("pagerduty", PagerDutyConfig, PagerDutyPager, "PagerDuty Events API v2")
