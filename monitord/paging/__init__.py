"""Telling people: routes and on-call schedules, pages and customer notices, the durable
outbox and its dispatcher, business hours."""
