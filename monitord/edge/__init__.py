"""Where monitord meets the outside: the daemon process, its hardened HTTP listener (metrics,
heartbeats, the API), the CLI, metrics, systemd notification."""
