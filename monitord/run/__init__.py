"""Running checks: the phase-locked scheduler, the one runner that turns a probe run into a
result, and the soft/hard check-state machine."""
