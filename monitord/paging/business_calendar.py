"""When is it business time? Business days, hours and report deadlines (../shared/SPEC.md §3).

A business day (弊社営業日, contract 002) is one of the configured weekdays (default Mon-Fri)
that is not a Japanese public holiday (substitute and citizens' holidays included, from the
``jpholiday`` package), not in the year-end break 12/30-1/3 (年末年始) and not an extra closed
day from the config. Business hours are ``start`` to ``end`` (default 10:00-18:00; contract
004 uses 9:00-17:30) on a business day, in the configured time zone (default Asia/Tokyo):
``start`` is inside business time, ``end`` is not.

All queries are pure functions of the config and the epoch time they are given.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import jpholiday

from monitord.config import BusinessHoursConfig, Config

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SEARCH_DAYS = 3660  # no business day in ten years: closed_days must cover everything


class BusinessCalendar:
    """Business days and hours built from the ``business_hours`` config block."""

    def __init__(self, config: BusinessHoursConfig = BusinessHoursConfig()):
        self.zone = zoneinfo.ZoneInfo(config.timezone)
        self.days = {_DAYS.index(day) for day in config.days}
        self.start, self.end = config.start, config.end
        self.holidays = config.holidays
        self.year_end_break = config.year_end_break
        self.closed_days = frozenset(config.closed_days)

    def closed_reason(self, day: dt.date) -> str | None:
        """Why ``day`` is not a business day (for announcements), or None if it is one."""
        if day.weekday() not in self.days:
            return f"{_DAYS[day.weekday()]} is not a business weekday"
        if self.holidays == "jp" and (name := jpholiday.is_holiday_name(day)):
            return f"public holiday {name}"
        if self.year_end_break and ((day.month, day.day) >= (12, 30) or (day.month, day.day) <= (1, 3)):
            return "year-end break 12/30-1/3 (年末年始)"
        if day in self.closed_days:
            return "closed day (business_hours.closed_days)"
        return None

    def for_host(self, host: str | None) -> "BusinessCalendar":
        """The same calendar for every host (see :class:`Calendars` for per-contract hours)."""
        return self

    def is_business_day(self, day: dt.date) -> bool:
        """True when ``day`` (a local date) is a business day."""
        return self.closed_reason(day) is None

    def is_business_time(self, when: float) -> bool:
        """True when epoch time ``when`` falls in business hours on a business day."""
        local = self._local(when)
        return self.start <= local.time() < self.end and self.is_business_day(local.date())

    def next_business_moment(self, when: float) -> float:
        """``when`` itself if it is business time, else the start of the next business window.

        This is when business-hours-only work that falls due at ``when`` can begin.
        """
        if self.is_business_time(when):
            return when
        local = self._local(when)
        day = local.date()
        if not (self.is_business_day(day) and local.time() < self.start):
            day = self._next_business_day(day)
        return self._at(day, self.start).timestamp()

    def add_business_days(self, when: float, n: int) -> dt.datetime:
        """The deadline for "within ``n`` business days after ``when``" (e.g. 障害報告は復旧後
        2 営業日以内): the end of business hours on the ``n``-th business day after the local
        date of ``when``. The day of ``when`` itself is never counted, whatever the hour, so a
        recovery on Friday at 11:00 or at 19:00 is due Tuesday at 18:00 (Wednesday if Monday is
        a holiday). Returned in the calendar's time zone; ``n`` must be at least 1.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n}")
        day = self._local(when).date()
        for _ in range(n):
            day = self._next_business_day(day)
        return self._at(day, self.end)

    def _local(self, when: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(when, self.zone)

    def _at(self, day: dt.date, time: dt.time) -> dt.datetime:
        return dt.datetime.combine(day, time, tzinfo=self.zone)

    def _next_business_day(self, day: dt.date) -> dt.date:
        """The first business day strictly after ``day``."""
        for offset in range(1, _SEARCH_DAYS + 1):
            candidate = day + dt.timedelta(days=offset)
            if self.is_business_day(candidate):
                return candidate
        raise ValueError(f"no business day within {_SEARCH_DAYS} days after {day}")


class Calendars:
    """Each host's business calendar: its customer's contract hours, else the default ones."""

    def __init__(self, config: Config):
        self.default = BusinessCalendar(config.business_hours)
        by_customer = {name: BusinessCalendar(c.business_hours) for name, c in config.customers.items()
                       if c.business_hours is not None}
        self._by_host = {host: by_customer[h.customer] for host, h in config.hosts.items() if h.customer in by_customer}

    def for_host(self, host: str | None) -> BusinessCalendar:
        """The calendar that applies to ``host`` (the default one for ``None``)."""
        return self._by_host.get(host, self.default) if host else self.default
