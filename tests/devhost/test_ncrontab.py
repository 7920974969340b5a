"""NCRONTAB and TimeSpan schedules, as the timer trigger reads them."""
from __future__ import annotations

import datetime as dt

import pytest

from devhost.ncrontab import CronSchedule, ScheduleError, TimeSpanSchedule, parse_schedule, parse_timespan

T0 = dt.datetime(2024, 5, 17, 10, 20, 30)  # a Friday


def nexts(expr: str, start: dt.datetime = T0, n: int = 3) -> list[dt.datetime]:
    s, out, t = parse_schedule(expr), [], start
    for _ in range(n):
        t = s.next_occurrence(t)
        out.append(t)
    return out


def test_every_second_and_every_n_seconds():
    assert nexts("* * * * * *") == [T0 + dt.timedelta(seconds=i) for i in (1, 2, 3)]
    assert nexts("*/15 * * * * *") == [dt.datetime(2024, 5, 17, 10, 20, 45), dt.datetime(2024, 5, 17, 10, 21, 0),
                                        dt.datetime(2024, 5, 17, 10, 21, 15)]
    # the project's MONITOR_SCHEDULE
    assert nexts("*/5 * * * * *", n=2) == [dt.datetime(2024, 5, 17, 10, 20, 35), dt.datetime(2024, 5, 17, 10, 20, 40)]


def test_next_is_strictly_after_and_ignores_microseconds():
    s = parse_schedule("0 * * * * *")
    assert s.next_occurrence(dt.datetime(2024, 1, 1, 0, 0, 0)) == dt.datetime(2024, 1, 1, 0, 1, 0)
    assert s.next_occurrence(dt.datetime(2024, 1, 1, 0, 0, 59, 999999)) == dt.datetime(2024, 1, 1, 0, 1, 0)


def test_ranges_lists_and_stepped_ranges():
    assert nexts("0 0 9-11 * * *", n=4) == [dt.datetime(2024, 5, 17, 11), dt.datetime(2024, 5, 18, 9),
                                           dt.datetime(2024, 5, 18, 10), dt.datetime(2024, 5, 18, 11)]
    assert nexts("0 5,35 * * * *", n=3) == [dt.datetime(2024, 5, 17, 10, 35), dt.datetime(2024, 5, 17, 11, 5),
                                           dt.datetime(2024, 5, 17, 11, 35)]
    assert nexts("0 0 8-18/4 * * *", n=4) == [dt.datetime(2024, 5, 17, 12), dt.datetime(2024, 5, 17, 16),
                                             dt.datetime(2024, 5, 18, 8), dt.datetime(2024, 5, 18, 12)]
    # "a/n" runs from a to the end of the field
    assert nexts("10/20 * * * * *", n=3) == [dt.datetime(2024, 5, 17, 10, 20, 50), dt.datetime(2024, 5, 17, 10, 21, 10),
                                            dt.datetime(2024, 5, 17, 10, 21, 30)]


def test_names_for_months_and_days_of_week():
    # every Monday at 09:30 (2024-05-20 is a Monday)
    assert nexts("0 30 9 * * MON", n=2) == [dt.datetime(2024, 5, 20, 9, 30), dt.datetime(2024, 5, 27, 9, 30)]
    assert nexts("0 30 9 * * 1", n=1) == [dt.datetime(2024, 5, 20, 9, 30)]
    assert nexts("0 0 0 1 jan,Jul *", n=2) == [dt.datetime(2024, 7, 1), dt.datetime(2025, 1, 1)]
    assert nexts("0 0 12 * * sun,SAT", n=3) == [dt.datetime(2024, 5, 18, 12), dt.datetime(2024, 5, 19, 12),
                                               dt.datetime(2024, 5, 25, 12)]


def test_day_of_month_and_day_of_week_must_both_match():
    # NCrontab: the 13th AND a Friday (Vixie cron would take either)
    assert nexts("0 0 0 13 * FRI", n=2) == [dt.datetime(2024, 9, 13), dt.datetime(2024, 12, 13)]


def test_month_ends_and_leap_days():
    assert nexts("0 0 0 31 * *", n=3) == [dt.datetime(2024, 5, 31), dt.datetime(2024, 7, 31), dt.datetime(2024, 8, 31)]
    assert nexts("0 0 0 29 2 *", n=2) == [dt.datetime(2028, 2, 29), dt.datetime(2032, 2, 29)]


def test_five_field_expression_means_second_zero():
    assert nexts("*/10 * * * *", n=2) == [dt.datetime(2024, 5, 17, 10, 30), dt.datetime(2024, 5, 17, 10, 40)]


@pytest.mark.parametrize("expr, fragment", [
    ("* * * *", "4 fields"),
    ("* * * * * * *", "7 fields"),
    ("60 * * * * *", "out of range"),
    ("* * 24 * * *", "out of range"),
    ("* * * 0 * *", "out of range"),
    ("* * * * 13 *", "out of range"),
    ("* * * * * 7", "out of range"),
    ("* 5-1 * * * *", "backwards"),
    ("*/0 * * * * *", "step"),
    ("x * * * * *", "not a valid second"),
    ("0 0 0 30 2 *", "never matches"),
    ("1,,2 * * * * *", "empty list item"),
])
def test_invalid_cron_expressions_are_refused(expr, fragment):
    with pytest.raises(ScheduleError) as e:
        CronSchedule(expr)
    assert fragment in str(e.value)


def test_parse_schedule_falls_back_to_timespan_and_reports_both_failures():
    assert isinstance(parse_schedule("00:05:00"), TimeSpanSchedule)
    assert isinstance(parse_schedule("0 */5 * * * *"), CronSchedule)
    with pytest.raises(ScheduleError, match="was not recognized as a valid cron expression or timespan string"):
        parse_schedule("every five minutes")


def test_timespans():
    assert parse_timespan("00:05:00") == dt.timedelta(minutes=5)
    assert parse_timespan("1.02:03:04") == dt.timedelta(days=1, hours=2, minutes=3, seconds=4)
    assert parse_timespan("00:00:00.25") == dt.timedelta(milliseconds=250)
    assert parse_timespan("25:00:00") is None and parse_timespan("5 minutes") is None
    s = parse_schedule("00:00:30")
    assert s.next_occurrence(T0) == T0 + dt.timedelta(seconds=30)
    assert s.min_interval() == dt.timedelta(seconds=30)
    with pytest.raises(ScheduleError):
        parse_schedule("00:00:00")


def test_min_interval_decides_the_monitor_default():
    assert parse_schedule("*/5 * * * * *").min_interval() == dt.timedelta(seconds=5)
    assert parse_schedule("0 */5 * * * *").min_interval() == dt.timedelta(minutes=5)
