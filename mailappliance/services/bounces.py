"""What a remote reply means for a recipient: delivered, retry later, or bounce - and which kind.

Reply codes are RFC 5321 §4.2; enhanced status codes RFC 3463 (``class.subject.detail``).
Bounce types follow the seed (hard / soft / transient / permanent):

* **hard** - the address is bad: 5.1.x (no such user, bad domain, null MX).
* **soft** - the mailbox exists but cannot take mail now and the server said 5xx anyway:
  5.2.x (mailbox full, disabled, message too big for the mailbox) or quota wording.
* **transient** - only temporary failures (4xx, timeouts, refused connections) until
  ``QUEUE_MAX_ATTEMPTS`` or ``QUEUE_MAX_AGE`` ran out.
* **permanent** - any other 5xx: policy (5.7.x), content (5.6.x), system (5.3.x) ...
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_QUOTA_WORDS = re.compile(r"quota|mailbox (is )?full|over ?quota|insufficient (storage|space)", re.I)
# Wording of replies that refuse the sending IP, not the message: a retry should use another.
_BLOCKED_IP = re.compile(
    r"block(ed|list)|black ?list|\bdnsbl\b|\brbl\b|spamhaus|listed (at|on|in)|reputation|poor reputation|"
    r"not allowed to send from|client host .* (rejected|refused)|ip .* (rejected|refused|banned)",
    re.I,
)

HARD, SOFT, TRANSIENT, PERMANENT = "hard", "soft", "transient", "permanent"
# RFC 3463 §3.2: bad sender mailbox syntax / system address - the recipient is not at fault.
SENDER_PROBLEMS = ("5.1.7", "5.1.8")


@dataclass
class Reply:
    """One outcome for one recipient, as the remote side (or this side) put it."""

    code: int
    text: str
    enhanced: Optional[str] = None
    stage: str = ""  # where it happened: connect, ehlo, starttls, mail, rcpt, data, dns, local
    remote: bool = False  # the text is a remote server's reply (not a local finding)

    def __post_init__(self) -> None:
        if self.enhanced is None:
            self.enhanced = enhanced_code(self.text)
            if self.enhanced is not None and self.enhanced[0] != str(self.code)[0]:
                self.enhanced = None  # a 5.x.x in a 4xx reply says nothing reliable

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def describe(self) -> str:
        enhanced = f"{self.enhanced} " if self.enhanced and not self.text.startswith(self.enhanced) else ""
        return f"{self.code} {enhanced}{self.text}".strip()


def enhanced_code(text: str) -> Optional[str]:
    """The RFC 3463 code at the start of a reply's text, if any."""
    match = ENHANCED.match(text.strip())
    return ".".join(match.groups()) if match else None


def bounce_type(reply: Reply, exhausted: bool = False) -> str:
    """hard / soft / transient / permanent for a recipient that will not be delivered."""
    if exhausted or reply.temporary or reply.code < 400:
        return TRANSIENT
    enhanced = reply.enhanced or ""
    if enhanced.startswith("5.1.") and enhanced not in SENDER_PROBLEMS:
        return HARD
    if enhanced.startswith("5.2.") or _QUOTA_WORDS.search(reply.text):
        return SOFT
    if not enhanced and reply.stage == "rcpt" and reply.code in (550, 551, 553) and re.search(
        r"unknown|no such|does not exist|not found|invalid (recipient|address|mailbox)|user unknown", reply.text, re.I
    ):
        return HARD
    return PERMANENT


def dsn_status(reply: Reply, exhausted: bool) -> str:
    """The RFC 3464 ``Status`` of a recipient that will not be delivered (RFC 3463 code)."""
    if exhausted:
        return "5.4.7"  # delivery time expired
    return reply.enhanced if reply.enhanced and reply.enhanced[0] == "5" else "5.0.0"


def blocks_ip(reply: Reply) -> bool:
    """True when the reply refuses the sending address rather than the message."""
    if reply.ok:
        return False
    if reply.enhanced in ("5.7.1", "4.7.1", "5.7.0", "4.7.0", "5.7.25", "5.7.27") or reply.stage in ("connect", "ehlo"):
        return bool(_BLOCKED_IP.search(reply.text))
    return bool(_BLOCKED_IP.search(reply.text)) and reply.code in (421, 450, 451, 550, 554)
