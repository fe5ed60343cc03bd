"""The business calendar: Japanese holidays, the year-end break, hours, report deadlines (SPEC §3)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from monitord.paging.business_calendar import BusinessCalendar, Calendars
from monitord.config import BusinessHoursConfig, ConfigError, parse_config

TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")
UTC = dt.timezone.utc
D = dt.date

CAL = BusinessCalendar()
CONTRACT_004 = BusinessCalendar(BusinessHoursConfig(start=dt.time(9, 0), end=dt.time(17, 30)))


def jst(*args: int) -> float:
    """Epoch seconds of a wall-clock time in Tokyo: jst(2026, 11, 20, 19, 0)."""
    return dt.datetime(*args, tzinfo=TOKYO).timestamp()


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=UTC).timestamp()


# Every Japanese public holiday of 2026 and 2027 (内閣府「国民の祝日」), typed here as the
# expectation; the calendar itself takes them from jpholiday.
HOLIDAYS = {
    D(2026, 1, 1): "元日",
    D(2026, 1, 12): "成人の日",
    D(2026, 2, 11): "建国記念の日",
    D(2026, 2, 23): "天皇誕生日",
    D(2026, 3, 20): "春分の日",
    D(2026, 4, 29): "昭和の日",
    D(2026, 5, 3): "憲法記念日",  # Sunday
    D(2026, 5, 4): "みどりの日",
    D(2026, 5, 5): "こどもの日",
    D(2026, 5, 6): "振替休日",  # substitute for Constitution Day on a Sunday
    D(2026, 7, 20): "海の日",
    D(2026, 8, 11): "山の日",
    D(2026, 9, 21): "敬老の日",
    D(2026, 9, 22): "国民の休日",  # citizens' holiday: between two holidays
    D(2026, 9, 23): "秋分の日",
    D(2026, 10, 12): "スポーツの日",
    D(2026, 11, 3): "文化の日",
    D(2026, 11, 23): "勤労感謝の日",
    D(2027, 1, 1): "元日",
    D(2027, 1, 11): "成人の日",
    D(2027, 2, 11): "建国記念の日",
    D(2027, 2, 23): "天皇誕生日",
    D(2027, 3, 21): "春分の日",  # Sunday
    D(2027, 3, 22): "振替休日",
    D(2027, 4, 29): "昭和の日",
    D(2027, 5, 3): "憲法記念日",
    D(2027, 5, 4): "みどりの日",
    D(2027, 5, 5): "こどもの日",
    D(2027, 7, 19): "海の日",
    D(2027, 8, 11): "山の日",
    D(2027, 9, 20): "敬老の日",
    D(2027, 9, 23): "秋分の日",
    D(2027, 10, 11): "スポーツの日",
    D(2027, 11, 3): "文化の日",
    D(2027, 11, 23): "勤労感謝の日",
}


def year_end(day: dt.date) -> bool:
    return (day.month, day.day) >= (12, 30) or (day.month, day.day) <= (1, 3)


def days_of(*years: int):
    day = D(years[0], 1, 1)
    while day.year <= years[-1]:
        yield day
        day += dt.timedelta(days=1)


# --- business days -----------------------------------------------------------------------


def test_every_day_of_2026_and_2027():
    wrong = [day for day in days_of(2026, 2027)
             if CAL.is_business_day(day) != (day.weekday() < 5 and day not in HOLIDAYS and not year_end(day))]
    assert wrong == []


def test_business_day_counts_2026_2027():
    counts = {year: sum(CAL.is_business_day(day) for day in days_of(year)) for year in (2026, 2027)}
    # 261 weekdays in each year; 2026: 17 weekday holidays and 1/2, 12/30, 12/31;
    # 2027: 16 weekday holidays and 12/30, 12/31 (1/1 is a holiday, 1/2-1/3 a weekend)
    assert counts == {2026: 241, 2027: 243}


@pytest.mark.parametrize("day, name", sorted(HOLIDAYS.items()))
def test_holiday_names_in_closed_reason(day, name):
    reason = CAL.closed_reason(day)
    assert reason is not None
    if day.weekday() < 5:
        assert name in reason


@pytest.mark.parametrize("day, business", [
    # Golden Week 2026: Wed 4/29 Showa Day, Sun 5/3 .. Wed 5/6 (substitute holiday)
    (D(2026, 4, 28), True), (D(2026, 4, 29), False), (D(2026, 4, 30), True), (D(2026, 5, 1), True),
    (D(2026, 5, 4), False), (D(2026, 5, 5), False), (D(2026, 5, 6), False), (D(2026, 5, 7), True),
    # Silver Week 2026: 9/21 敬老の日, 9/22 国民の休日, 9/23 秋分の日
    (D(2026, 9, 18), True), (D(2026, 9, 21), False), (D(2026, 9, 22), False), (D(2026, 9, 23), False),
    (D(2026, 9, 24), True),
    # substitute holiday 2027: 春分の日 on Sunday 3/21
    (D(2027, 3, 22), False), (D(2027, 3, 23), True),
    # year-end break 12/30-1/3
    (D(2025, 12, 29), True), (D(2025, 12, 30), False), (D(2026, 1, 2), False), (D(2026, 1, 5), True),
    (D(2026, 12, 29), True), (D(2026, 12, 30), False), (D(2026, 12, 31), False), (D(2027, 1, 1), False),
    (D(2027, 1, 4), True),
    (D(2027, 12, 29), True), (D(2027, 12, 30), False), (D(2027, 12, 31), False),
    (D(2028, 1, 3), False), (D(2028, 1, 4), True),  # 1/3/2028 is a Monday, still closed
])
def test_business_day_table(day, business):
    assert CAL.is_business_day(day) is business


def test_closed_reasons():
    assert CAL.closed_reason(D(2026, 11, 21)) == "sat is not a business weekday"
    assert CAL.closed_reason(D(2026, 5, 6)) == "public holiday 憲法記念日 振替休日"
    assert CAL.closed_reason(D(2026, 9, 22)) == "public holiday 国民の休日"
    assert CAL.closed_reason(D(2026, 12, 30)) == "year-end break 12/30-1/3 (年末年始)"
    assert CAL.closed_reason(D(2026, 11, 24)) is None


def test_switches_and_extra_closed_days():
    plain = BusinessCalendar(BusinessHoursConfig(holidays="none", year_end_break=False))
    assert plain.is_business_day(D(2026, 5, 6)) and plain.is_business_day(D(2026, 12, 30))
    obon = BusinessCalendar(BusinessHoursConfig(closed_days=[D(2026, 8, 14)]))
    assert not obon.is_business_day(D(2026, 8, 14)) and obon.is_business_day(D(2026, 8, 13))
    assert obon.closed_reason(D(2026, 8, 14)) == "closed day (business_hours.closed_days)"
    saturdays = BusinessCalendar(BusinessHoursConfig(days=["mon", "tue", "wed", "thu", "fri", "sat"]))
    assert saturdays.is_business_day(D(2026, 11, 21)) and not saturdays.is_business_day(D(2026, 11, 22))


# --- business time -----------------------------------------------------------------------


@pytest.mark.parametrize("when, business", [
    (jst(2026, 11, 20, 9, 59, 59), False),
    (jst(2026, 11, 20, 10, 0), True),  # start is inside
    (jst(2026, 11, 20, 17, 59, 59), True),
    (jst(2026, 11, 20, 18, 0), False),  # end is not
    (jst(2026, 11, 21, 12, 0), False),  # Saturday
    (jst(2026, 11, 23, 12, 0), False),  # 勤労感謝の日
    (jst(2026, 5, 6, 12, 0), False),  # substitute holiday
    (jst(2026, 9, 22, 12, 0), False),  # citizens' holiday
    (jst(2026, 12, 30, 12, 0), False),  # year-end break
    (jst(2027, 1, 4, 10, 0), True),
])
def test_is_business_time(when, business):
    assert CAL.is_business_time(when) is business


def test_contract_004_hours_9_to_1730():
    assert not CONTRACT_004.is_business_time(jst(2026, 11, 20, 8, 59, 59))
    assert CONTRACT_004.is_business_time(jst(2026, 11, 20, 9, 0))
    assert CONTRACT_004.is_business_time(jst(2026, 11, 20, 17, 29, 59))
    assert not CONTRACT_004.is_business_time(jst(2026, 11, 20, 17, 30))
    assert not CONTRACT_004.is_business_time(jst(2026, 5, 6, 12, 0))  # same holidays


def test_epochs_are_read_in_tokyo_time_not_utc():
    # Friday 2026-11-20 10:00 JST is 01:00 UTC; 18:00 JST is 09:00 UTC
    assert not CAL.is_business_time(utc(2026, 11, 20, 0, 59, 59))
    assert CAL.is_business_time(utc(2026, 11, 20, 1, 0))
    assert CAL.is_business_time(utc(2026, 11, 20, 8, 59, 59))
    assert not CAL.is_business_time(utc(2026, 11, 20, 9, 0))
    # Sunday 2026-11-15 16:00 UTC is already Monday 01:00 in Tokyo
    assert CAL.next_business_moment(utc(2026, 11, 15, 16, 0)) == utc(2026, 11, 16, 1, 0)
    # a calendar kept in UTC reads the same epoch differently
    in_utc = BusinessCalendar(BusinessHoursConfig(timezone="UTC"))
    assert in_utc.is_business_time(utc(2026, 11, 20, 10, 0)) and not CAL.is_business_time(utc(2026, 11, 20, 10, 0))


# --- next business moment ----------------------------------------------------------------


@pytest.mark.parametrize("when, expected", [
    (jst(2026, 11, 20, 12, 0), jst(2026, 11, 20, 12, 0)),  # already business time: itself
    (jst(2026, 11, 19, 8, 0), jst(2026, 11, 19, 10, 0)),  # early morning: today's start
    (jst(2026, 11, 13, 18, 0), jst(2026, 11, 16, 10, 0)),  # Friday closing time: Monday
    (jst(2026, 11, 14, 3, 0), jst(2026, 11, 16, 10, 0)),  # Saturday
    (jst(2026, 11, 15, 23, 59), jst(2026, 11, 16, 10, 0)),  # Sunday night
    (jst(2026, 11, 20, 19, 0), jst(2026, 11, 24, 10, 0)),  # Friday evening, Monday holiday
    (jst(2026, 5, 1, 18, 30), jst(2026, 5, 7, 10, 0)),  # Golden Week
    (jst(2026, 9, 18, 20, 0), jst(2026, 9, 24, 10, 0)),  # Silver Week
    (jst(2026, 12, 29, 18, 30), jst(2027, 1, 4, 10, 0)),  # year-end break
    (jst(2027, 1, 1, 9, 0), jst(2027, 1, 4, 10, 0)),
    (jst(2027, 12, 29, 20, 0), jst(2028, 1, 4, 10, 0)),  # 1/3/2028 is a Monday in the break
])
def test_next_business_moment(when, expected):
    assert CAL.next_business_moment(when) == expected
    assert CAL.is_business_time(expected)


def test_next_business_moment_with_contract_004_hours():
    assert CONTRACT_004.next_business_moment(jst(2026, 11, 20, 17, 30)) == jst(2026, 11, 24, 9, 0)
    assert CONTRACT_004.next_business_moment(jst(2026, 11, 24, 8, 59)) == jst(2026, 11, 24, 9, 0)
    assert CONTRACT_004.next_business_moment(jst(2026, 11, 24, 17, 29)) == jst(2026, 11, 24, 17, 29)


def test_no_business_day_at_all_is_an_error_not_a_hang():
    closed = [D(2026, 11, 20) + dt.timedelta(days=i) for i in range(4000)]
    cal = BusinessCalendar(BusinessHoursConfig(closed_days=closed))
    with pytest.raises(ValueError, match="no business day within 3660 days after 2026-11-20"):
        cal.next_business_moment(jst(2026, 11, 20, 19, 0))


# --- report deadlines: "within N business days after T" ------------------------------------


@pytest.mark.parametrize("when, n, due", [
    # the incident report: 2 business days after recovery (002 障害報告)
    (jst(2026, 11, 13, 19, 0), 2, dt.datetime(2026, 11, 17, 18, 0, tzinfo=TOKYO)),  # Fri evening -> Tue 18:00
    (jst(2026, 11, 13, 11, 0), 2, dt.datetime(2026, 11, 17, 18, 0, tzinfo=TOKYO)),  # the day itself never counts
    (jst(2026, 11, 14, 2, 0), 2, dt.datetime(2026, 11, 17, 18, 0, tzinfo=TOKYO)),  # Saturday
    (jst(2026, 11, 20, 19, 0), 2, dt.datetime(2026, 11, 25, 18, 0, tzinfo=TOKYO)),  # Mon 11/23 holiday -> Wed
    (jst(2026, 7, 17, 19, 0), 2, dt.datetime(2026, 7, 22, 18, 0, tzinfo=TOKYO)),  # Mon 7/20 海の日 -> Wed
    (jst(2026, 4, 28, 19, 0), 2, dt.datetime(2026, 5, 1, 18, 0, tzinfo=TOKYO)),  # over Showa Day
    (jst(2026, 5, 1, 19, 0), 2, dt.datetime(2026, 5, 8, 18, 0, tzinfo=TOKYO)),  # over Golden Week
    (jst(2026, 9, 18, 19, 0), 2, dt.datetime(2026, 9, 25, 18, 0, tzinfo=TOKYO)),  # over Silver Week
    (jst(2026, 12, 29, 15, 0), 2, dt.datetime(2027, 1, 5, 18, 0, tzinfo=TOKYO)),  # over the year-end break
    (jst(2027, 3, 19, 19, 0), 2, dt.datetime(2027, 3, 24, 18, 0, tzinfo=TOKYO)),  # Mon 3/22 振替休日
    (jst(2026, 11, 13, 19, 0), 1, dt.datetime(2026, 11, 16, 18, 0, tzinfo=TOKYO)),
    (jst(2026, 11, 16, 12, 0), 3, dt.datetime(2026, 11, 19, 18, 0, tzinfo=TOKYO)),  # 3営業日以内 work requests
])
def test_report_deadline(when, n, due):
    assert CAL.add_business_days(when, n) == due


def test_report_deadline_is_in_tokyo_time():
    due = CAL.add_business_days(jst(2026, 11, 13, 19, 0), 2)
    assert due.tzinfo == TOKYO and due.isoformat() == "2026-11-17T18:00:00+09:00"
    assert due.timestamp() == utc(2026, 11, 17, 9, 0)
    # Thursday 23:00 UTC is Friday 08:00 in Tokyo: counting starts from Friday, not Thursday
    assert CAL.add_business_days(utc(2026, 11, 12, 23, 0), 2).date() == D(2026, 11, 17)


def test_report_deadline_with_contract_004_hours():
    assert CONTRACT_004.add_business_days(jst(2026, 11, 13, 19, 0), 2) == dt.datetime(2026, 11, 17, 17, 30, tzinfo=TOKYO)


def test_report_deadline_needs_at_least_one_day():
    with pytest.raises(ValueError, match="n must be at least 1, not 0"):
        CAL.add_business_days(jst(2026, 11, 13, 19, 0), 0)


# --- config ------------------------------------------------------------------------------


def test_defaults_are_the_contract_values():
    hours = parse_config("").business_hours
    assert (hours.timezone, hours.days, hours.start, hours.end) == (
        "Asia/Tokyo", ["mon", "tue", "wed", "thu", "fri"], dt.time(10, 0), dt.time(18, 0))
    assert (hours.holidays, hours.year_end_break, hours.closed_days) == ("jp", True, [])


def test_config_with_contract_004_hours_and_closed_days():
    hours = parse_config(
        'business_hours:\n  start: "9:00"\n  end: "17:30"\n  closed_days: [2026-08-14, "2026-08-13"]\n'
    ).business_hours
    assert (hours.start, hours.end) == (dt.time(9, 0), dt.time(17, 30))
    assert hours.closed_days == [D(2026, 8, 14), D(2026, 8, 13)]
    assert not BusinessCalendar(hours).is_business_time(jst(2026, 8, 13, 12, 0))


def test_an_unquoted_time_is_read_as_written_not_as_sexagesimal_seconds():
    hours = parse_config("business_hours:\n  start: 9:00\n  end: 17:30:30\n").business_hours
    assert (hours.start, hours.end) == (dt.time(9, 0), dt.time(17, 30, 30))


INVALID = {
    'start: "18:00"\n  end: "10:00"': ["business_hours.end: end 10:00 must be after start 18:00 (line 3)"],
    'start: "10:00"\n  end: "10:00"': ["business_hours.end: end 10:00 must be after start 10:00 (line 3)"],
    'end: "9:00"': ["business_hours.end: end 09:00 must be after start 10:00 (line 2)"],
    "start: 540": ["business_hours.start: invalid time 540: write it like 9:00, 17:30 or 23:59:59 (line 2)"],
    'start: "25:00"': ["business_hours.start: invalid time '25:00': write it like 9:00, 17:30 or 23:59:59 (line 2)"],
    "holidays: us": ["business_hours.holidays: input should be 'jp' or 'none' (line 2)"],
    "holiday: none": ["business_hours.holiday: unknown key (did you mean 'holidays'?) (line 2)"],
    "year_end_break: maybe": ["business_hours.year_end_break: input should be a valid boolean, unable to interpret "
                              "input (line 2)"],
    "days: []": ["business_hours.days: give at least one business weekday, e.g. [mon, tue, wed, thu, fri] (line 2)"],
    "timezone: Asia/Tokio": ["business_hours.timezone: unknown time zone 'Asia/Tokio' (line 2)"],
    'closed_days: ["2026-08-32"]': ["business_hours.closed_days[0]: input should be a valid date or datetime, day "
                                    "value is outside expected range (line 2)"],
}


@pytest.mark.parametrize("block", list(INVALID))
def test_invalid_business_hours_message(block):
    with pytest.raises(ConfigError) as info:
        parse_config(f"business_hours:\n  {block}\n")
    assert info.value.problems == INVALID[block]


def test_a_customer_contract_can_have_its_own_hours():
    config = parse_config("""
customers:
  vvault: {business_hours: {start: "9:00", end: "17:30"}}
hosts:
  appliance: {address: 127.0.0.1, customer: vvault}
  web1: {address: 127.0.0.1}
""")
    calendars = Calendars(config)
    evening = dt.datetime(2026, 11, 24, 17, 45, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo")).timestamp()  # a Tuesday
    assert calendars.for_host("appliance").is_business_time(evening) is False  # 004: 9:00-17:30
    assert calendars.for_host("web1").is_business_time(evening) is True  # default 10:00-18:00
    assert calendars.for_host(None) is calendars.default
    due = calendars.for_host("appliance").add_business_days(evening, 2)
    assert (due.day, due.hour, due.minute) == (26, 17, 30)
