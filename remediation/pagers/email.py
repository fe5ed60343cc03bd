"""E-mail over SMTP (aiosmtplib): customer failure notices and engineer mail.

The message is plain text in UTF-8 (base64 or quoted-printable, whichever is shorter);
headers with non-ASCII text (a Japanese subject or sender name) are RFC 2047
encoded-words, so the mail reads correctly in any client. ``Message-ID`` is derived from
the dedup key, action and recipients: the one duplicate a crash can cause carries the same ID, which
mail systems and clients use to drop it.

Connection security is ``tls``: ``starttls`` (default, port 587), ``implicit`` (SMTPS, port
465) or ``none`` (port 25, only without authentication). Certificates are verified against
the system CAs or ``ca_file``. SMTP 4xx replies, timeouts and lost connections are retried;
5xx replies (bad recipient, refused sender, failed authentication) are not.
"""

from __future__ import annotations

import hashlib
import ssl
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, parseaddr
from typing import Literal

import aiosmtplib
from pydantic import Field, field_validator, model_validator

from monitord.shared.fields import ConfigPath, Port, SecretRef
from monitord.shared.results import Reason
from remediation.pagers.base import (DeliveryError, HttpClient, Integration, IntegrationBase, Message,
                                     read_secret)

DEFAULT_PORT = {"starttls": 587, "implicit": 465, "none": 25}
MAIL_POLICY = policy.SMTP.clone(cte_type="7bit")
"""CRLF lines, encoded-words in headers, and a 7-bit body: plain ASCII as is, other text
in base64 or quoted-printable (whichever is shorter), so no relay has to convert it."""


def _address(value: str) -> str:
    addr = parseaddr(value)[1]
    if not addr or "@" not in addr or addr.startswith("@") or addr.endswith("@") or " " in addr:
        raise ValueError(f"not an e-mail address: {value!r}")
    return value


class EmailConfig(IntegrationBase):
    """An SMTP submission server and the sender (and default recipients) of the mail."""

    type: Literal["email"]
    host: str
    port: Port | None = Field(default=None, description="default: 587 (starttls), 465 (implicit), 25 (none)")
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    ca_file: ConfigPath | None = Field(default=None, description="CA bundle for the server's certificate")
    username: str | None = None
    password: SecretRef | None = None
    sender: str = Field(alias="from", description='e.g. "監視センター <noc@example.jp>"')
    to: list[str] = Field(default=[], description="recipients when the message names none")
    subject_prefix: str = ""

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        return _address(value)

    @field_validator("to")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        return [_address(v) for v in value]

    @model_validator(mode="after")
    def _auth(self) -> "EmailConfig":
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        if self.username is not None and self.tls == "none":
            raise ValueError("authentication needs tls: starttls or implicit (the password would travel in clear)")
        return self


def compose(message: Message, config: EmailConfig, recipients: list[str]) -> EmailMessage:
    """The MIME message: From, To, Subject, Date, Message-ID and a UTF-8 text body."""
    mail = EmailMessage(policy=MAIL_POLICY)
    mail["From"] = config.sender
    mail["To"] = ", ".join(recipients)
    mail["Subject"] = config.subject_prefix + message.summary
    mail["Date"] = formatdate(message.at, localtime=True)
    domain = parseaddr(config.sender)[1].rpartition("@")[2] or "monitord"
    identity = "\0".join((message.dedup_key, message.action, *sorted(recipients)))
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    mail["Message-ID"] = f"<{digest}@{domain}>"
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Monitord-Dedup-Key"] = message.dedup_key
    mail["X-Monitord-Action"] = message.action
    text = message.body or message.summary
    if message.details:
        text += "\n\n" + "\n".join(f"{k}: {v}" for k, v in message.details.items())
    mail.set_content(text if text.endswith("\n") else text + "\n", charset="utf-8")
    return mail


def _tls_context(config: EmailConfig) -> ssl.SSLContext | None:
    if config.tls == "none":
        return None
    return ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)


def _failure(exc: Exception, where: str) -> DeliveryError:
    """Map an aiosmtplib or socket error to a typed, retryable-or-not failure."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        refused = ", ".join(f"{r.recipient} ({r.code} {r.message})" for r in exc.recipients)
        return DeliveryError(Reason.PROTOCOL, f"{where}: recipients refused: {refused}",
                             retryable=any(code < 500 for code in codes))
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reason = Reason.AUTH if isinstance(exc, aiosmtplib.SMTPAuthenticationError) else Reason.PROTOCOL
        return DeliveryError(reason, f"{where}: {exc.code} {exc.message}", retryable=exc.code < 500)
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, TimeoutError)):
        return DeliveryError(Reason.TIMEOUT, f"{where}: timed out", retryable=True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DeliveryError(Reason.AUTH, f"{where}: TLS certificate: {exc.verify_message}", retryable=False)
    if isinstance(exc, ConnectionRefusedError) or (isinstance(exc, aiosmtplib.SMTPConnectError)
                                                   and "refused" in str(exc).lower()):
        return DeliveryError(Reason.REFUSED, f"{where}: connection refused", retryable=True)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return DeliveryError(Reason.PROTOCOL, f"{where}: {exc}", retryable=False)
    return DeliveryError(Reason.ERROR, f"{where}: {type(exc).__name__}: {exc}", retryable=True)


class EmailPager:
    """Sends mail through one SMTP server."""

    def __init__(self, config: EmailConfig, http: HttpClient | None = None):
        self.config, self.timeout = config, config.timeout

    async def send(self, message: Message) -> str:
        """Submit the mail; raise :class:`DeliveryError` unless the server accepted it for every recipient."""
        config = self.config
        recipients = list(message.to or config.to)
        if not recipients:
            raise DeliveryError(Reason.PROTOCOL, "no recipients: the message names none and the config has no to",
                                retryable=False)
        for value in recipients:
            try:
                _address(value)
            except ValueError as exc:
                raise DeliveryError(Reason.PROTOCOL, str(exc), retryable=False) from None
        mail = compose(message, config, recipients)
        password = read_secret(config.password) if config.password else None
        port = config.port or DEFAULT_PORT[config.tls]
        where = f"smtp {config.host}:{port}"
        try:
            refused, reply = await aiosmtplib.send(
                mail.as_bytes(), sender=parseaddr(config.sender)[1],
                recipients=[addr for _, addr in getaddresses(recipients)],
                hostname=config.host, port=port, username=config.username, password=password,
                use_tls=config.tls == "implicit", start_tls=config.tls == "starttls",
                tls_context=_tls_context(config), timeout=self.timeout)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _failure(exc, where) from None
        if refused:  # some recipients took it: resending would duplicate it for them
            return f"{where}: accepted, but refused " + ", ".join(f"{r} ({resp.code})" for r, resp in refused.items())
        return f"{where}: {reply}"


INTEGRATION = Integration("email", EmailConfig, EmailPager, "e-mail over SMTP")
