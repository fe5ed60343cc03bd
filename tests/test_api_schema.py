"""schemathesis against the live daemon of tests/test_read_api.py: every operation of the
OpenAPI document served at /api/v1/openapi.json, with generated (seeded, derandomised) inputs,
with and without the bearer token: no 5xx, and every answer's status, content type and body
match the document."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from tests.test_read_api import TOKEN, live  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_every_answer_matches_the_document(live):  # noqa: F811 - the imported fixture
    _, port = live
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # quarantine powers hosts off: tests/test_power_path.py and the CLI tests drive it, not a fuzzer
    operations = [op for op in operations if not op.path.endswith(("/quarantine", "/release"))]
    assert len(operations) == 16  # every other operation of the document (approve and deny too), none skipped

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(derandomize=True, max_examples=30, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def answers_as_documented(case):
            for headers in ({"Authorization": f"Bearer {TOKEN}"}, None):
                case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

        answers_as_documented()
