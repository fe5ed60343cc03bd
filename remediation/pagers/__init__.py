"""Pager integrations: one module per type, and this registry, the single list of types.

The config's ``paging`` section is :class:`PagingConfig`; its ``integrations`` map names
to :data:`IntegrationConfig`, the union of every type's config model discriminated by
``type``. :func:`build_pagers` turns that section into ready pagers for
:class:`monitord.paging.outbox.Dispatcher`.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field, model_validator

from monitord.shared.fields import Duration, StrictModel
from remediation.pagers import email, opsgenie, pagerduty, slack, webhook
from remediation.pagers.base import DeliveryError, HttpClient, Integration, Message, Pager

__all__ = ["REGISTRY", "IntegrationConfig", "PagingConfig", "RetryPolicy", "build_pagers", "DeliveryError",
           "HttpClient", "Message", "Pager"]

REGISTRY: dict[str, Integration] = {
    integration.type: integration
    for integration in (pagerduty.INTEGRATION, opsgenie.INTEGRATION, slack.INTEGRATION, webhook.INTEGRATION,
                        email.INTEGRATION)
}

IntegrationConfig = Annotated[
    Union[tuple(integration.config for integration in REGISTRY.values())],  # type: ignore[valid-type]
    Field(discriminator="type"),
]

IntegrationName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=64)]


class RetryPolicy(StrictModel):
    """How the outbox retries a failed delivery: exponential backoff with jitter, then give up.

    The n-th retry waits ``initial * 2**(n-1)``, at most ``max_delay``, shortened by up to
    ``jitter`` (a fraction) at random so that many queued pages do not retry in step.
    """

    initial: Duration = 5.0
    max_delay: Duration = 300.0
    jitter: float = Field(default=0.2, ge=0, lt=1)
    give_up_after: Duration = Field(default=86400.0, description="a page still undelivered this long after it "
                                                                 "was queued is given up (marked dead)")
    max_attempts: int | None = Field(default=None, ge=1, description="give up after this many attempts too")

    @model_validator(mode="after")
    def _order(self) -> "RetryPolicy":
        if self.max_delay < self.initial:
            raise ValueError("max_delay must not be less than initial")
        return self

    def delay(self, attempts: int, random: float) -> float:
        """The wait after ``attempts`` failed attempts, for ``random`` in [0, 1)."""
        base = min(self.initial * 2 ** max(attempts - 1, 0), self.max_delay)
        return base * (1 - self.jitter * random)


class PagingConfig(StrictModel):
    """The ``paging`` section: named integrations and the outbox's retry policy."""

    integrations: dict[IntegrationName, IntegrationConfig] = {}
    retry: RetryPolicy = RetryPolicy()


def build_pagers(config: PagingConfig, http: HttpClient) -> dict[str, Pager]:
    """A pager per configured integration, by name. Secrets are read at each send, not here."""
    return {name: REGISTRY[item.type].build(item, http) for name, item in config.integrations.items()}
