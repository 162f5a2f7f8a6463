"""LMTP (RFC 2033) as a small subclass of the SMTP session.

The differences are all here: LHLO instead of HELO/EHLO (§4.1), no relaying and no
AUTH, and after DATA one reply per accepted recipient (§4.2), so one full or failing
mailbox never fails the others.
"""
from __future__ import annotations

from mailappliance.protocol.replies import Reply, S
from mailappliance.protocol.smtp import Action, Envelope, SmtpSession


class LmtpSession(SmtpSession):
    service = "LMTP"
    protocol_base = "LMTP"
    per_recipient_replies = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._verbs.pop("HELO")
        self._verbs.pop("AUTH")
        self._verbs["EHLO"] = self._use_lhlo
        self._verbs["HELO"] = self._use_lhlo
        self._verbs["LHLO"] = self.smtp_LHLO

    def smtp_LHLO(self, argument: str) -> list[Action]:
        return self._greet(argument, esmtp=True)

    def _use_lhlo(self, argument: str) -> list[Action]:
        return [S.USE_LHLO]

    @property
    def protocol_name(self) -> str:
        return "LMTPS" if self.tls_active else "LMTP"

    def _per_recipient(self, envelope: Envelope, reply: Reply) -> list[Action]:
        return [reply] * max(1, len(envelope.recipients))
