"""Slack incoming webhook: one message per event, with ``text`` (notifications and
fallback) and ``blocks``. Slack has no alert to acknowledge or resolve: those are messages
too, marked as such.

The webhook URL is itself the credential, so it comes from a secret, and only its host
appears in errors. Slack answers 200 ``ok``; 400/403/404/410 (bad payload, revoked or
archived) are not retryable, 429 and 5xx are.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from monitord.shared.fields import SecretRef
from remediation.pagers.base import HttpClient, Integration, IntegrationBase, Message, read_secret

SEVERITY_MARK = {"critical": ":red_circle:", "error": ":large_orange_circle:", "warning": ":large_yellow_circle:",
                 "info": ":large_blue_circle:"}
ACTION_MARK = {"acknowledge": (":eyes:", "Acknowledged"), "resolve": (":white_check_mark:", "Resolved")}
SECTION_MAX = 3000


class SlackConfig(IntegrationBase):
    """A Slack incoming webhook."""

    type: Literal["slack"]
    webhook_url: SecretRef = Field(description="https://hooks.slack.com/services/... (the URL is the secret)")


def escape(text: str) -> str:
    """Slack's mrkdwn escaping of ``&``, ``<`` and ``>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(message: Message) -> dict:
    """The webhook body: a plain ``text`` line and the same with details as blocks."""
    mark, label = ACTION_MARK.get(message.action) or (SEVERITY_MARK[message.severity], message.severity.upper())
    line = f"{mark} *{label}* {escape(message.summary)} ({escape(message.source)})"
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": line[:SECTION_MAX]}}]
    if message.body:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": escape(message.body)[:SECTION_MAX]}})
    if message.details:
        fields = [{"type": "mrkdwn", "text": f"*{escape(str(k))}*\n{escape(str(v))}"[:2000]}
                  for k, v in list(message.details.items())[:10]]
        blocks.append({"type": "section", "fields": fields})
    key = f"dedup key `{escape(message.dedup_key)}`"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": key}]})
    return {"text": line, "blocks": blocks}


class SlackPager:
    """Posts to one Slack incoming webhook."""

    def __init__(self, config: SlackConfig, http: HttpClient):
        self.config, self.http, self.timeout = config, http, config.timeout

    async def send(self, message: Message) -> str:
        """POST the message; 200 means posted."""
        await self.http.post(read_secret(self.config.webhook_url), payload(message), timeout=self.timeout, ok={200})
        return f"slack posted {message.action} {message.dedup_key}"


INTEGRATION = Integration("slack", SlackConfig, SlackPager, "Slack incoming webhook")
