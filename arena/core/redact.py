"""URLs as people may see them: without the ``user:password@`` a base URL or database URL may carry.

Used wherever a URL reaches a page, an API answer, a log line or an error message. Works on text
that is not a valid URL too (a malformed ``--database`` value is echoed in its error), with string
operations only.
"""
from __future__ import annotations

HIDDEN = "***"


def redact_url(text: str) -> str:
    """``scheme://user:secret@host/…`` -> ``scheme://user:***@host/…``; ``scheme://token@host`` ->
    ``scheme://***@host``. Text without credentials comes back unchanged."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    authority_end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if found != -1:
            authority_end = min(authority_end, found)
    authority, path = rest[:authority_end], rest[authority_end:]
    credentials, at, host = authority.rpartition("@")
    if not at:
        return text
    user, colon, _ = credentials.partition(":")
    hidden = f"{user}:{HIDDEN}" if colon else HIDDEN
    return f"{scheme}://{hidden}@{host}{path}"


def without_credentials(url: str) -> str:
    """The URL with no user or password at all: what a visitor may see of a remote model's server."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority_end = min([i for i in (rest.find(c) for c in "/?#") if i != -1] or [len(rest)])
    host = rest[:authority_end].rpartition("@")[2]
    return f"{scheme}://{host}{rest[authority_end:]}"
