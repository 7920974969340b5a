"""Timer schedules the way the Functions timer trigger reads them.

Two forms, tried in this order (as the real host does):

* NCRONTAB, six fields ``second minute hour day month day-of-week`` (a five-field
  expression without seconds is accepted too, seconds then being 0). Each field takes
  ``*``, a number, ``a-b``, ``*/n``, ``a-b/n``, ``a/n`` (from a to the field's end, every n)
  and comma-separated lists of those. Months take JAN..DEC and days of week SUN..SAT
  (Sunday is 0, as in NCrontab; 7 is refused). Like NCrontab, and unlike Vixie cron, a
  time matches only when the day of month AND the day of week both match.
* A TimeSpan ``hh:mm:ss`` (optionally ``d.hh:mm:ss`` and fractional seconds): the next
  occurrence is always ``now + interval``.

Occurrences are computed in local time (naive datetimes), like the host, which uses the
machine's time zone (``TZ`` / ``WEBSITE_TIME_ZONE``).
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

__all__ = ["ScheduleError", "CronSchedule", "TimeSpanSchedule", "parse_schedule", "parse_timespan"]


class ScheduleError(ValueError):
    """The expression is neither a valid NCRONTAB expression nor a TimeSpan."""


_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
_FULL_MONTHS = ["JANUARY", "FEBRUARY", "MARCH", "APRIL", "MAY", "JUNE", "JULY", "AUGUST",
                "SEPTEMBER", "OCTOBER", "NOVEMBER", "DECEMBER"]
_FULL_DAYS = ["SUNDAY", "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY"]


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DAY = _Field("day", 1, 31)
_MONTH = _Field("month", 1, 12, {**{n: i + 1 for i, n in enumerate(_MONTHS)},
                                 **{n: i + 1 for i, n in enumerate(_FULL_MONTHS)}})
_DOW = _Field("day-of-week", 0, 6, {**{n: i for i, n in enumerate(_DAYS)},
                                    **{n: i for i, n in enumerate(_FULL_DAYS)}})


def _value(token: str, field: _Field, expr: str) -> int:
    token = token.strip()
    if field.names and token.upper() in field.names:
        return field.names[token.upper()]
    if not token.isdigit():
        raise ScheduleError(f"'{token}' is not a valid {field.name} value in '{expr}'")
    value = int(token)
    if not field.low <= value <= field.high:
        raise ScheduleError(
            f"{field.name} value {value} is out of range {field.low}-{field.high} in '{expr}'")
    return value


def _parse_field(text: str, field: _Field, expr: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ScheduleError(f"empty list item in the {field.name} field of '{expr}'")
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"'{step_text}' is not a valid step in '{expr}'")
            step = int(step_text)
        if part == "*":
            first, last = field.low, field.high
        elif "-" in part:
            a, b = part.split("-", 1)
            first, last = _value(a, field, expr), _value(b, field, expr)
            if first > last:
                raise ScheduleError(f"range {part} is backwards in '{expr}'")
        else:
            first = _value(part, field, expr)
            # "a/n" means from a to the end of the field, every n (NCrontab's reading).
            last = field.high if step != 1 else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


def parse_timespan(text: str) -> _dt.timedelta | None:
    """Parse a .NET TimeSpan ``[-][d.]hh:mm[:ss[.fffffff]]``; None when it isn't one."""
    m = re.fullmatch(r"\s*(-)?(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?\s*", text)
    if not m:
        return None
    neg, days, hours, minutes, seconds, frac = m.groups()
    if int(hours) > 23 or int(minutes) > 59 or (seconds and int(seconds) > 59):
        return None
    span = _dt.timedelta(days=int(days or 0), hours=int(hours), minutes=int(minutes),
                         seconds=int(seconds or 0),
                         microseconds=int((frac or "0").ljust(7, "0")[:6]))
    return -span if neg else span


class CronSchedule:
    """A parsed NCRONTAB expression."""

    is_interval = False

    def __init__(self, expression: str) -> None:
        self.expression = expression
        fields = expression.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            raise ScheduleError(
                f"'{expression}' has {len(fields)} fields; an NCRONTAB expression has 6 "
                "(second minute hour day month day-of-week)")
        spec = (_SECOND, _MINUTE, _HOUR, _DAY, _MONTH, _DOW)
        (self.seconds, self.minutes, self.hours, self.days, self.months,
         self.days_of_week) = (_parse_field(t, f, expression) for t, f in zip(fields, spec))
        # Refuse expressions that can never fire (e.g. 30 February), like NCrontab does at
        # first use: otherwise the timer would silently never run.
        if self.next_occurrence(_dt.datetime(2000, 1, 1)) is None:
            raise ScheduleError(f"'{expression}' never matches any date")

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r})"

    def __str__(self) -> str:
        return f"Cron: '{self.expression}'"

    def _day_matches(self, d: _dt.date) -> bool:
        # Python: Monday=0; cron: Sunday=0.
        return d.day in self.days and (d.weekday() + 1) % 7 in self.days_of_week

    def next_occurrence(self, after: _dt.datetime) -> _dt.datetime | None:
        """The first matching time strictly after ``after`` (second precision)."""
        tz = after.tzinfo
        t = after.replace(microsecond=0, tzinfo=None) + _dt.timedelta(seconds=1)
        limit = t.year + 8  # leap-day schedules recur within 8 years
        while t.year <= limit:
            if t.month not in self.months:
                y, m = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
                t = _dt.datetime(y, m, 1)
                continue
            if not self._day_matches(t.date()):
                t = _dt.datetime(t.year, t.month, t.day) + _dt.timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = _dt.datetime(t.year, t.month, t.day, t.hour) + _dt.timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t = _dt.datetime(t.year, t.month, t.day, t.hour, t.minute) + _dt.timedelta(minutes=1)
                continue
            if t.second not in self.seconds:
                t += _dt.timedelta(seconds=1)
                continue
            return t.replace(tzinfo=tz)
        return None

    def min_interval(self) -> _dt.timedelta:
        """Shortest gap between two consecutive occurrences near now (used for useMonitor)."""
        base = _dt.datetime(2001, 1, 1)
        a = self.next_occurrence(base)
        b = self.next_occurrence(a) if a else None
        return (b - a) if (a and b) else _dt.timedelta(days=365)


class TimeSpanSchedule:
    """A constant interval: every occurrence is ``now + interval``."""

    is_interval = True

    def __init__(self, expression: str, interval: _dt.timedelta) -> None:
        if interval <= _dt.timedelta(0):
            raise ScheduleError(f"'{expression}' is not a positive interval")
        self.expression = expression
        self.interval = interval

    def __repr__(self) -> str:
        return f"TimeSpanSchedule({self.expression!r})"

    def __str__(self) -> str:
        return f"Constant: {self.expression}"

    def next_occurrence(self, after: _dt.datetime) -> _dt.datetime:
        return after + self.interval

    def min_interval(self) -> _dt.timedelta:
        return self.interval


def parse_schedule(expression: str) -> CronSchedule | TimeSpanSchedule:
    """Parse a timer schedule; raises ScheduleError with the host's wording when neither form fits."""
    try:
        return CronSchedule(expression)
    except ScheduleError as cron_error:
        span = parse_timespan(expression)
        if span is not None:
            return TimeSpanSchedule(expression.strip(), span)
        raise ScheduleError(
            f"The schedule expression '{expression}' was not recognized as a valid cron "
            f"expression or timespan string ({cron_error}).") from None
