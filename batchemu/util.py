"""Small helpers: timestamps, ISO 8601 durations, ids, ETags."""
from __future__ import annotations

import datetime
import email.utils
import itertools
import re
import threading
import time

from conventions.scrub import scrub

from .errors import bad_property

UTC = datetime.UTC
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_DURATION = "P10675199DT2H48M5.4775807S"  # what the service reports for "unlimited"

_etag_lock = threading.Lock()
_etag_counter = itertools.count(int(time.time() * 1e7))


def now_iso(ts: float | None = None) -> str:
    ts = time.time() if ts is None else ts
    return datetime.datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def http_date(ts: float | None = None) -> str:
    return email.utils.formatdate(time.time() if ts is None else ts, usegmt=True)


def parse_iso(value: str) -> float | None:
    try:
        v = value.strip()
        if v.endswith("Z"):
            v = v[:-1] + "+00:00"
        # Python 3.11 fromisoformat handles up to 6 fractional digits; trim longer ones.
        m = re.match(r"^(.*\.\d{6})\d+(.*)$", v)
        if m:
            v = m.group(1) + m.group(2)
        d = datetime.datetime.fromisoformat(v)
        if d.tzinfo is None:
            d = d.replace(tzinfo=UTC)
        return d.timestamp()
    except Exception:
        return None


def new_etag() -> str:
    with _etag_lock:
        return f"0x{next(_etag_counter):X}"


_DUR_RE = re.compile(
    r"^P(?:(?P<y>\d+(?:\.\d+)?)Y)?(?:(?P<mo>\d+(?:\.\d+)?)M)?(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<mi>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(value, prop: str = "duration") -> float:
    """ISO 8601 duration (``PT5S``, ``P1DT2H``, ``PT0.5S``) -> seconds. Raises a 400 on bad input."""
    if not isinstance(value, str) or value in ("P", "PT") or not (m := _DUR_RE.match(value.strip())):
        raise bad_property(prop, value, "Invalid ISO 8601 duration")
    g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return (g["y"] * 365 + g["mo"] * 30 + g["w"] * 7 + g["d"]) * 86400 + g["h"] * 3600 + g["mi"] * 60 + g["s"]


def check_id(value, prop: str = "id") -> str:
    if value is None or value == "":
        from .errors import missing_property
        raise missing_property(prop)
    if not isinstance(value, str) or not ID_RE.match(value):
        raise bad_property(prop, value, "The id can contain any combination of alphanumeric characters including "
                                        "hyphens and underscores, and cannot contain more than 64 characters")
    return value


_URL_QUERY = re.compile(r"""(\b[a-z][a-z0-9+.-]*://[^\s?#"'<>]*)\?[^\s#"'<>]*""", re.IGNORECASE)


def strip_sas(text: object) -> str:
    """Text safe to log or report: every URL in it loses its query string (where a SAS token
    travels), and what `conventions.scrub` recognises anywhere else (account keys, SharedKey and
    bearer authorizations, ...) is redacted. A bare URL comes back as the URL without its query."""
    return scrub(_URL_QUERY.sub(r"\1", text if isinstance(text, str) else str(text)))
