"""The bytes of a message: a skeleton encoded once by the email package, then
per-recipient pieces spliced in, byte-identical to what the email package would produce.

* `Skeleton` is a message serialized once with stand-ins (the `SKELETON_*` values)
  for a recipient's values, cut at them; `Skeleton.fill` splices the recipient's
  encoded values and bodies into its slots.
* `encode_lines` encodes whole body lines quoted-printable exactly as
  `set_content(cte="quoted-printable")` does, so a body is its pieces' encodings end to end.
* `subject_line` is the Subject header line as `MAIL_POLICY` folds and encodes it.
* `PLAIN_ADDRESS`, `PLAIN_URL` and `PLAIN_WORDS` tell which values a header writes
  exactly as given, so splicing them in gives the same bytes.

`digest.message.DigestMailer.encoded` assembles each recipient's message from these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy, quoprimime
from email.utils import format_datetime

from digest.sources.records import one_line

QP_LINE_LENGTH = 78  # policy.SMTP's max_line_length, which set_content encodes bodies with
# The skeleton's stand-ins for a recipient's values (see digest.message.DigestMailer.encoded).
SKELETON_TO = b"pdxtoxpd@pdx.example.org"
SKELETON_ID = b"<pdxmsgidxpd@pdx.example.org>"
SKELETON_URL = b"https://pdx.example.org/pdxunsubscribexpd"
SKELETON_SUBJECT_TEXT = "PDXSUBJECTXPD"
_SKELETON_SUBJECT = b"Subject: PDXSUBJECTXPD\r\n"
SKELETON_SENT_AT = datetime(2000, 1, 1, tzinfo=UTC)
_SKELETON_DATE = format_datetime(SKELETON_SENT_AT).encode("ascii")
SKELETON_TEXT_LINE = "PDXTEXTBODYXPD"
SKELETON_HTML_LINE = "PDXHTMLBODYXPD"
_SKELETON_TEXT = SKELETON_TEXT_LINE.encode() + b"\r\n"
_SKELETON_HTML = SKELETON_HTML_LINE.encode() + b"\r\n"
# What a header shows exactly as given (no quoting, no encoded words, no folding).
PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+")
PLAIN_URL = re.compile(r"[A-Za-z0-9%/:._~?=&+-]+")
# Words a header writes as they are, after an encoded word (no folding within 200 characters).
PLAIN_WORDS = re.compile(r"[A-Za-z0-9,.+-]+(?: [A-Za-z0-9,.+-]+)*")

# Unfolded headers (RFC 5322 allows 998 characters) keep the unsubscribe URL on one line.
MAIL_POLICY = policy.SMTP.clone(max_line_length=998)


@dataclass(frozen=True)
class Skeleton:
    """A serialized message cut at its slots: its literal bytes between them."""

    literals: tuple[bytes, ...]
    slots: tuple[str, ...]

    @classmethod
    def of(cls, message: bytes) -> Skeleton:
        stand_ins = {
            "subject": _SKELETON_SUBJECT,
            "to": SKELETON_TO,
            "date": _SKELETON_DATE,
            "msgid": SKELETON_ID,
            "url": SKELETON_URL,
            "text": _SKELETON_TEXT,
            "html": _SKELETON_HTML,
        }
        found = sorted((message.index(token), slot, token) for slot, token in stand_ins.items())
        literals: list[bytes] = []
        position = 0
        for start, _, token in found:
            literals.append(message[position:start])
            position = start + len(token)
        literals.append(message[position:])
        return cls(tuple(literals), tuple(slot for _, slot, _ in found))

    def fill(self, **values: bytes) -> bytes:
        pieces = [self.literals[0]]
        for slot, literal in zip(self.slots, self.literals[1:], strict=True):
            pieces += (values[slot], literal)
        return b"".join(pieces)


def subject_line(subject: str) -> bytes:
    """The Subject header line as `build_message` and `as_bytes` write it."""
    name, value = MAIL_POLICY.header_store_parse("Subject", one_line(subject))
    return MAIL_POLICY.fold_binary(name, value)


def encode_lines(text: str) -> bytes:
    """Whole lines of a body as `set_content(cte="quoted-printable")` encodes them (each
    line on its own: a body's encoding is its pieces' encodings, end to end)."""
    if not text.endswith("\n"):
        text += "\n"
    latin = text.encode("utf-8").decode("latin-1")
    return quoprimime.body_encode(latin, QP_LINE_LENGTH, eol="\r\n").encode("ascii")
