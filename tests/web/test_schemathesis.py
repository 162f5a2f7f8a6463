"""Schemathesis against the served OpenAPI documents (Swagger 2.0) of both HTTP apps.

Every operation of ``/api/swagger.json`` on API_PORT and on MAILBOX_API_PORT is called
with generated valid input (checks: no 5xx, status code declared, content type
declared, body matching the declared schema) and with generated invalid input (checks:
no 5xx, rejected with a 4xx). The appliance holds a few queued, delivered and bounced
messages so the item endpoints have something to find. Bounded by ``EXAMPLES``.
"""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.web.outbound_helpers import KEY, queue  # noqa: E402,F401 (queue is a fixture)

EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 25}
CHECKS = {
    GenerationMode.POSITIVE: [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    GenerationMode.NEGATIVE: [not_a_server_error, negative_data_rejection],
}


def operations(port: int):
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/api/swagger.json")
    # Unknown query parameters are ignored (as HTTP APIs do), and the key is sent with
    # every call rather than generated: neither counts as input to reject.
    schema.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)
    found = [result.ok() for result in schema.get_all_operations()]
    assert found, "the document lists operations"
    return found


def exercise(port: int, mode: GenerationMode, failures: list[str]) -> int:
    base_url = f"http://127.0.0.1:{port}/api"
    count = 0
    for operation in operations(port):
        count += 1

        @settings(
            max_examples=EXAMPLES[mode],
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            case.call_and_validate(base_url=base_url, headers={"x-api-key": KEY}, checks=CHECKS[mode])

        try:
            run()
        except Unsatisfiable:  # no invalid input exists (no parameters, or free-form strings only)
            assert mode is GenerationMode.NEGATIVE, operation.label
        except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure, then report them together
            failures.append(f"{mode.value} {operation.label}: {str(exc)[:1500]}")
    return count


def test_found_items_match_their_declared_schemas(queue):
    """Generated ids find nothing (404): call each item operation with an id that exists."""
    c = queue.stores.collections
    queue.admin.create("sender@example.com", "correct horse battery")
    existing = {
        "/successful-emails/": {"record_id": str(c.successful.find_one()["_id"])},
        "/bounced-emails/": {"record_id": str(c.bounced.find_one()["_id"])},
        "/incoming-emails/": {"email_id": str(c.incoming.find_one()["_id"])},
        "/mailboxes/": {"address": "sender@example.com"},
        "/emails/": {"email_id": queue.ids["two"]},
    }
    port = queue.ports["api"]
    checked = []
    for operation in operations(port):
        if operation.method.upper() != "GET" or "{" not in operation.path:
            continue
        params = next(value for prefix, value in existing.items() if operation.path.startswith(prefix))
        case = operation.Case(path_parameters=params)
        response = case.call_and_validate(
            base_url=f"http://127.0.0.1:{port}/api", headers={"x-api-key": KEY}, checks=CHECKS[GenerationMode.POSITIVE]
        )
        assert response.status_code == 200, (operation.label, response.text[:300])
        checked.append(operation.label)
    assert len(checked) == 6, checked


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid-input", "invalid-input"])
def test_both_apps_conform_and_never_fail(queue, mode):
    failures: list[str] = []
    api_operations = exercise(queue.ports["api"], mode, failures)
    mailbox_operations = exercise(queue.ports["mailbox-api"], mode, failures)
    assert api_operations >= 20 and mailbox_operations >= 5
    assert not failures, "\n\n".join(failures)
