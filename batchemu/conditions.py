"""Conditional requests: If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since.

Guarantees: a `Conditions` is only data taken from the request; it is checked by the engine method that
reads or changes the resource, under the engine's lock, against the version that method then reads or
changes (as Azurite checks them in the store method that writes), so two conditional writes can never
both pass against the same version. A failed condition is ``412 ConditionNotMet``, or `NotModified`
(304) for an If-None-Match / If-Modified-Since on a GET or HEAD; a malformed date is ``400
InvalidHeaderValue``.
"""
from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import NotModified, bad_header, err
from .util import parse_iso


def _tags(header: str) -> list[str]:
    out = []
    for tag in header.split(","):
        tag = tag.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        out.append(tag.strip('"'))
    return out


def _since(name: str, value: str) -> float:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError) as exc:
        raise bad_header(name) from exc


@dataclass(frozen=True)
class Conditions:
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None
    read: bool = False  # a GET/HEAD: a current copy answers 304 rather than 412

    @classmethod
    def from_request(cls, method: str, headers: Mapping[str, str]) -> Conditions:
        """`headers` with lower-case names."""
        return cls(headers.get("if-match"), headers.get("if-none-match"), headers.get("if-modified-since"),
                   headers.get("if-unmodified-since"), method in ("GET", "HEAD"))

    def _not_met(self, current_copy: bool) -> Exception:
        return NotModified() if current_copy and self.read else err("ConditionNotMet")

    def check(self, etag: str, last_modified: str | None) -> None:
        """Raises unless the request's conditions hold for this version of the resource."""
        if self.if_match and self.if_match.strip() != "*" and etag not in _tags(self.if_match):
            raise self._not_met(False)
        if self.if_none_match and (self.if_none_match.strip() == "*" or etag in _tags(self.if_none_match)):
            raise self._not_met(True)
        lm = parse_iso(last_modified) if last_modified else None
        if lm is None:
            return
        if self.if_modified_since and not int(lm) > int(_since("if-modified-since", self.if_modified_since)):
            raise self._not_met(True)
        if self.if_unmodified_since and int(lm) > int(_since("if-unmodified-since", self.if_unmodified_since)):
            raise self._not_met(False)


NO_CONDITIONS = Conditions()
