"""Run e-mails: SMTP (optional STARTTLS and login), or .eml files in the outbox in dev."""

from __future__ import annotations

import logging
import mimetypes
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from dagster import ConfigurableResource

from etl_assets.resources.errors import ConnectorError, first_line, redact, reveal

log = logging.getLogger("etl_assets.mailer")


class MailerResource(ConfigurableResource):
    """Sends one message with attachments; ``password`` is a token."""

    env: str = "dev"
    sender: str
    recipients: list[str] = []
    outbox: str
    smtp_host: str = ""
    smtp_port: int = 25
    starttls: bool = False
    cafile: str = ""
    user: str = ""
    password: str = ""
    timeout: float = 10.0
    retries: int = 2
    backoff_seconds: float = 1.0

    @property
    def label(self) -> str:
        if not self.smtp_host:
            return f"outbox {self.outbox}"
        login = f"{self.user}@" if self.user else ""
        return f"smtp {login}{self.smtp_host}:{self.smtp_port}" + (" starttls" if self.starttls else "")

    def build_message(
        self,
        subject: str,
        body: str,
        attachments: Sequence[Path] = (),
        recipients: Sequence[str] | None = None,
    ) -> EmailMessage:
        """A MIME message with every attachment; its content type guessed from the name."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(recipients if recipients is not None else self.recipients)
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=True)
        message["Message-ID"] = make_msgid(domain="etl-assets")
        message.set_content(body)
        for path in attachments:
            ctype, _ = mimetypes.guess_type(path.name)
            maintype, subtype = (ctype or "application/octet-stream").split("/", 1)
            message.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name)
        return message

    def send(
        self,
        subject: str,
        body: str,
        attachments: Sequence[Path] = (),
        recipients: Sequence[str] | None = None,
    ) -> str:
        """Send (or, without SMTP, write to the outbox); returns where the message went."""
        return self.send_message(self.build_message(subject, body, attachments, recipients))

    def send_message(self, message: EmailMessage) -> str:
        """Send a message built before (e.g. one kept while SMTP was down)."""
        if not self.smtp_host:
            return str(self._write_eml(message))
        if not message["To"]:
            raise ConnectorError("mail", f"{self.label}: no recipients: set mail.recipients")
        for attempt in range(self.retries + 1):
            try:
                self._deliver(message)
                break
            except ConnectorError as exc:
                if not exc.transient or attempt == self.retries:
                    if attempt:
                        raise ConnectorError("mail", f"{exc.reason} after {attempt + 1} tries") from None
                    raise
                delay = self.backoff_seconds * 2**attempt
                log.warning("%s; retry %d/%d in %.1f s", exc, attempt + 1, self.retries, delay)
                time.sleep(delay)
        return f"{self.label} to {message['To']}"

    def _write_eml(self, message: EmailMessage) -> Path:
        outbox = Path(self.outbox)
        outbox.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%S')}_{uuid.uuid4().hex[:8]}.eml"
        partial = outbox / f".{name}.part"
        partial.write_bytes(bytes(message))
        return partial.replace(outbox / name)

    def _password(self) -> str | None:
        return reveal("mail", self.password, "mail.smtp.password")

    def _deliver(self, message: EmailMessage | None) -> None:
        """Open a session, log in, and send ``message`` (None: only log in)."""
        password = self._password()
        try:
            with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout) as smtp:
                smtp.ehlo()
                if self.starttls:
                    context = ssl.create_default_context(cafile=self.cafile or None)
                    smtp.starttls(context=context)
                    smtp.ehlo()
                if self.user:
                    smtp.login(self.user, password or "")
                if message is not None:
                    smtp.send_message(message)
                else:
                    # would the server take a message from us? (a server that wants a login
                    # refuses MAIL FROM; nothing is sent)
                    code, reply = smtp.mail(self.sender)
                    smtp.rset()
                    if code >= 400:
                        raise smtplib.SMTPSenderRefused(code, reply, self.sender)
        except smtplib.SMTPAuthenticationError:
            raise ConnectorError(
                "mail", f"{self.label}: login refused for user {self.user!r} (wrong password?)"
            ) from None
        except ssl.SSLError as exc:
            raise ConnectorError("mail", f"{self.label}: TLS failed ({first_line(exc)})") from None
        except smtplib.SMTPNotSupportedError as exc:
            hint = "" if self.starttls else " (does the server need starttls: true?)"
            reason = f"{first_line(exc)}{hint}"
            raise ConnectorError("mail", redact(f"{self.label}: {reason}", [password])) from None
        except (OSError, smtplib.SMTPException) as exc:
            transient = isinstance(exc, OSError | smtplib.SMTPServerDisconnected)
            if isinstance(
                exc, (ConnectionRefusedError, socket.timeout, socket.gaierror, smtplib.SMTPConnectError)
            ):
                transient = not isinstance(exc, socket.gaierror)  # a wrong host name stays wrong
                reason = f"host unreachable: {self.smtp_host}:{self.smtp_port} ({first_line(exc)})"
            elif isinstance(exc, smtplib.SMTPResponseException):
                # not the exception's str(): that is a tuple repr with the raw bytes
                error = exc.smtp_error
                if isinstance(error, bytes):
                    error = error.decode(errors="replace")
                reason = f"the server refused: {exc.smtp_code} {error}"
                transient = 400 <= exc.smtp_code < 500  # 4xx: try again later, says the server
            elif isinstance(exc, smtplib.SMTPRecipientsRefused):
                reason = f"the server refused the recipients {', '.join(exc.recipients)}"
            else:
                reason = first_line(exc)
            raise ConnectorError("mail", redact(f"{self.label}: {reason}", [password]), transient) from None

    def check_connection(self, send_test_email: bool = False) -> str:
        """Log in (and optionally send a test e-mail to the recipients)."""
        if send_test_email:
            where = self.send(
                f"[etl_assets][{self.env}] test e-mail",
                "test-connections sent this message; no action needed.",
            )
            return f"{self.label}: test e-mail sent ({where})"
        if self.smtp_host:
            self._deliver(None)
        else:
            Path(self.outbox).mkdir(parents=True, exist_ok=True)
        return self.label
