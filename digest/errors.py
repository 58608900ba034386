"""The project's own errors: problems a user or operator can act on.

Every module raises a subclass of `DigestError` whose message is one line that
names the file, key, record or field at fault. The entry points (the CLI, the
scheduler jobs, the web app) turn them into a one-line message, an error page
or a log line; none of them is ever shown as a traceback.
"""

from __future__ import annotations


class DigestError(Exception):
    """A problem with input, configuration or environment; `str()` is one line."""


class ConfigError(DigestError, ValueError):
    """A configuration value is missing, malformed or of the wrong type."""


class SubscriberError(DigestError, ValueError):
    """Invalid subscriber input: address, timezone, hour, weekday or topic.

    `about` names the value at fault ("topic 'the'"), put before the `reason` in the
    one line of the CLI and of an import row; a web form, which shows the reason by
    that value's own field, shows the reason alone (`FieldErrors`).
    """

    def __init__(self, reason: str, about: str = "") -> None:
        super().__init__(f"{about}: {reason}" if about else reason)
        self.reason = reason


class DatabaseUnavailable(DigestError):
    """The database cannot be opened, read or written (missing driver, corrupt, read-only...)."""


SHOWN_CHARS = 60


def shown(value: object) -> str:
    """A user's value quoted for an error line: its first SHOWN_CHARS characters, then "…"
    (any other value: its repr, cut alike).

    Errors echo what was typed so it can be found, but a 100 KB argument must not
    become a 100 KB error line.
    """
    if not isinstance(value, str):
        text = repr(value)
        return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"
    cut = value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "…"
    return repr(cut)
