"""Opsgenie Alert API: create an alert with ``alias`` = dedup key, acknowledge and close it
by alias.

Authentication is the ``Authorization: GenieKey <key>`` header of an API integration.
Opsgenie processes requests asynchronously and answers 202; creating an alert whose alias
is already open only adds to it, so a duplicate after a crash is harmless.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from pydantic import Field

from monitord.shared.fields import SecretRef, StrictModel
from remediation.pagers.base import HttpClient, HttpUrl, Integration, IntegrationBase, Message, read_secret

DEFAULT_URL = "https://api.opsgenie.com"  # EU instances: https://api.eu.opsgenie.com
PRIORITY = {"critical": "P1", "error": "P2", "warning": "P3", "info": "P5"}
MESSAGE_MAX, DESCRIPTION_MAX, ALIAS_MAX = 130, 15000, 512


class Responder(StrictModel):
    """Who an alert is assigned to: a team, user (by username), escalation or schedule."""

    type: Literal["team", "user", "escalation", "schedule"]
    name: str

    def body(self) -> dict:
        """The Alert API's form of this responder."""
        return {"type": self.type, ("username" if self.type == "user" else "name"): self.name}


class OpsgenieConfig(IntegrationBase):
    """An Opsgenie API integration."""

    type: Literal["opsgenie"]
    api_key: SecretRef = Field(description="the API integration's key (sent as GenieKey)")
    url: HttpUrl = DEFAULT_URL
    responders: list[Responder] = Field(default=[], description="empty: the integration's own team")
    tags: list[str] = []


def request(message: Message, config: OpsgenieConfig) -> tuple[str, dict]:
    """The path and body of the Alert API request for ``message``."""
    alias = message.dedup_key[:ALIAS_MAX]
    if message.action == "trigger":
        body: dict = {"message": message.summary[:MESSAGE_MAX], "alias": alias, "source": "monitord",
                      "entity": message.source, "priority": PRIORITY[message.severity],
                      "details": {str(k): str(v) for k, v in message.details.items()}}
        description = message.body or (message.summary if len(message.summary) > MESSAGE_MAX else "")
        if description:
            body["description"] = description[:DESCRIPTION_MAX]
        if config.responders:
            body["responders"] = [r.body() for r in config.responders]
        if config.tags:
            body["tags"] = config.tags
        return "/v2/alerts", body
    verb = "acknowledge" if message.action == "acknowledge" else "close"
    return (f"/v2/alerts/{quote(alias, safe='')}/{verb}?identifierType=alias",
            {"source": "monitord", "user": "monitord", "note": message.summary})


class OpsgeniePager:
    """Sends alerts to one Opsgenie API integration."""

    def __init__(self, config: OpsgenieConfig, http: HttpClient):
        self.config, self.http, self.timeout = config, http, config.timeout

    async def send(self, message: Message) -> str:
        """Create, acknowledge or close the alert; 202 means accepted."""
        path, body = request(message, self.config)
        headers = {"Authorization": f"GenieKey {read_secret(self.config.api_key)}"}
        await self.http.post(self.config.url.rstrip("/") + path, body, headers=headers, timeout=self.timeout,
                             ok={200, 201, 202})
        return f"opsgenie accepted {message.action} {message.dedup_key}"


INTEGRATION = Integration("opsgenie", OpsgenieConfig, OpsgeniePager, "Opsgenie Alert API")
