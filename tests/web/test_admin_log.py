"""Operator actions leave one log line each (``mailappliance.admin``), like postsuper's."""
import logging

import pytest

from tests.conftest import PASSWORD
from tests.web.outbound_helpers import call, queue  # noqa: F401 (queue is a fixture)


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def admin_log():
    handler = Lines()
    logger = logging.getLogger("mailappliance.admin")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_mailbox_and_queue_actions_are_logged(queue, admin_log):
    status, _, _ = call(queue, "/api/mailboxes", method="POST", body={"username": "ops@example.com", "password": PASSWORD})
    assert status == 201
    status, _, _ = call(queue, "/api/mailboxes/ops@example.com/change-password", method="POST", body={"oldPassword": "wrong-one", "newPassword": PASSWORD + "2"})
    assert status == 403
    status, _, _ = call(queue, "/api/mailboxes/ops@example.com/change-password", method="POST", body={"oldPassword": PASSWORD, "newPassword": PASSWORD + "2"})
    assert status == 200
    assert call(queue, "/api/mailboxes/ops@example.com", method="DELETE")[0] == 200
    bounced = queue.ids["three"]
    assert call(queue, f"/api/emails/{bounced}/retry", method="POST")[0] == 200
    assert call(queue, f"/api/emails/{bounced}", method="DELETE")[0] == 200
    assert admin_log[:4] == [
        "mailbox created: ops@example.com (quota unlimited)",
        "password change refused: wrong old password for ops@example.com",
        "password changed: ops@example.com",
        "mailbox deleted: ops@example.com (with its folders and messages)",
    ]
    assert admin_log[4:] == [
        f"{bounced}: retry requested by API client [127.0.0.1]: queued",
        f"{bounced}: delete requested by API client [127.0.0.1]: deleted",
    ]
