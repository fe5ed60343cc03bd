"""What is kept: the state store (check states, incidents, the append-only journal), its health
watch, and the incident reports drafted from the journal."""
