"""The leaf every layer imports, and the only part of monitord that plugins (``probes/``,
``remediation/``) may import: results and reasons, config fields and durations, the clock,
redaction, the access blocks of a host, the probe and power-driver interfaces, kept state and
the last-backup records, and the request side of the HTTP listener. It imports nothing else
of the project."""
