"""monitord: monitoring and auto-remediation daemon for managed servers."""

__version__ = "0.1.0"
