"""Secrets in text, and their removal: one set of patterns for the app, the local functions host and
the Batch emulator.

Guarantee: after `scrub` a text holds none of these (each value is replaced by a marker, default
``<redacted>``; the name in front of it is kept so a reader still sees what was there):

* a SAS signature: the value of ``sig=`` (also URL-encoded, ``sig%3D``) and of ``SharedAccessSignature=``;
* a key, secret, password or token written ``name=value``, ``name='value'`` or ``"name": "value"``:
  ``AccountKey`` (connection strings), ``SharedAccessKey``, ``sasKey``/``sas_token``,
  ``ClientSecret``/``client_secret``, ``password``, ``access_token``/``refresh_token``/``id_token``
  (a quoted value is removed up to its closing quote, spaces included);
* a SharedKey authorization: the signature after ``SharedKey <account>:`` (the account name stays);
* a bearer or basic authorization: the token after ``Authorization: Bearer`` / ``Basic`` (any length),
  or after a bare ``Bearer`` (tokens of 16 characters or more, so prose such as "Bearer tokens are
  not supported" stays as it is);
* the request signature Storage quotes back in an authentication error
  (``The MAC signature found in the HTTP request '...'``).

Idempotent: ``scrub(scrub(t)) == scrub(t)``. `scrub_bytes` does the same on bytes, keeping every other
byte as it was (a task's log need not be UTF-8).

`PATTERN` is the one regular expression behind both: group 1 is the name that is kept, the rest of a
match is the secret. A caller may use it to find secrets itself (e.g. one that straddles a cut);
``re.compile(PATTERN.pattern.encode(), re.IGNORECASE)`` is its bytes form. Standard library only.
"""
from __future__ import annotations

import re

__all__ = ["MARKER", "PATTERN", "PATTERN_BYTES", "scrub", "scrub_bytes"]

MARKER = "<redacted>"

# names whose value is a secret, in key=value / JSON / Python keyword forms
_NAMES = (r"account_?key|shared_?access_?key|shared_?access_?signature|sas_?key|sas_?token"
          r"|client_?secret|password|(?:access|refresh|id)_token")
_QUOTE = "[\"']"
_PREFIXES = [
    r"sig=", r"sig%3D",                                                   # SAS signature
    rf"{_QUOTE}(?:{_NAMES}){_QUOTE}\s*:\s*{_QUOTE}?",                     # "accountKey": "..."
    rf"(?:{_NAMES}){_QUOTE}?\s*=\s*{_QUOTE}?",                            # AccountKey=..., password='...'
    r"SharedKey(?:Lite)?\s+[^:\s\"'<>]+:",                                # SharedKey account:signature
    rf"Authorization{_QUOTE}?\s*[:=]\s*{_QUOTE}?(?:Bearer|Basic)\s+",     # Authorization: Bearer token
    r"Bearer\s+(?=[A-Za-z0-9\-._~+/]{16})",                               # a bare bearer token
    r"signature found in the HTTP request '",                             # Storage's 403 message
]
# a value that follows a quote runs to the closing quote (on the same line); any other value runs to
# the next separator (&, ;, whitespace, quote, angle bracket)
_VALUE = r"""(?:(?<=")[^"\r\n]*|(?<=')[^'\r\n]*|[^&;\s"'<>]+)"""

PATTERN: re.Pattern[str] = re.compile("(" + "|".join(_PREFIXES) + ")" + _VALUE, re.IGNORECASE)
PATTERN_BYTES: re.Pattern[bytes] = re.compile(PATTERN.pattern.encode(), re.IGNORECASE)


def scrub(text: str, marker: str = MARKER) -> str:
    """`text` with every secret's value replaced by `marker` (see the module's list)."""
    return PATTERN.sub(lambda m: m.group(1) + marker, text)


def scrub_bytes(data: bytes, marker: bytes = MARKER.encode()) -> bytes:
    """`scrub` on raw bytes: the same secrets replaced, every other byte kept as it was."""
    return PATTERN_BYTES.sub(lambda m: m.group(1) + marker, data)
