"""When is it business time? The interface the escalation engine asks, and weekly hours.

The Japanese public holidays and the year-end break come with the paging issue; this
implementation knows weekdays and hours in a time zone (contract default: Mon-Fri
10:00-18:00, Asia/Tokyo).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Protocol

from monitord.config import BusinessHoursConfig

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class BusinessCalendar(Protocol):
    """What the engine needs from a business calendar."""

    def is_business_time(self, when: float) -> bool:
        """True when epoch time ``when`` falls in business hours."""


class WeeklyHours:
    """Business hours as weekdays and a daily time range in one time zone."""

    def __init__(self, config: BusinessHoursConfig):
        self.zone = zoneinfo.ZoneInfo(config.timezone)
        self.days = {_DAYS.index(day) for day in config.days}
        self.start, self.end = config.start, config.end

    def is_business_time(self, when: float) -> bool:
        """True when epoch time ``when`` falls in business hours."""
        local = dt.datetime.fromtimestamp(when, self.zone)
        return local.weekday() in self.days and self.start <= local.time() < self.end
