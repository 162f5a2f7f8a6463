"""Failed-login guard: per address and per client IP, in a sliding window, with lockout."""
from mailappliance.services.imap.login import LoginGuard


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_address_is_locked_after_too_many_failures_then_released():
    clock = Clock()
    guard = LoginGuard(per_address=3, per_ip=100, window=60, lockout=300, clock=clock)
    for _ in range(2):
        guard.failed("a@x", "192.0.2.1")
    assert guard.locked("a@x", "192.0.2.9") is None
    guard.failed("a@x", "192.0.2.1")
    assert "address" in guard.locked("a@x", "192.0.2.9")
    assert guard.locked("b@x", "192.0.2.1") is None  # other users from that IP are fine
    clock.now += 301
    assert guard.locked("a@x", "192.0.2.9") is None


def test_failures_outside_the_window_are_forgotten():
    clock = Clock()
    guard = LoginGuard(per_address=3, per_ip=100, window=60, lockout=300, clock=clock)
    guard.failed("a@x", "ip")
    guard.failed("a@x", "ip")
    clock.now += 61
    guard.failed("a@x", "ip")
    assert guard.locked("a@x", "ip") is None


def test_ip_lockout_spans_addresses_and_exempt_ips_are_not_counted():
    guard = LoginGuard(per_address=100, per_ip=3, clock=Clock())
    for user in ("a", "b", "c"):
        guard.failed(user, "198.51.100.7")
    assert "ip" in guard.locked("d", "198.51.100.7")
    for user in ("a", "b", "c"):
        guard.failed(user, "127.0.0.1", exempt_ip=True)
    assert guard.locked("d", "127.0.0.1", exempt_ip=True) is None


def test_success_clears_the_address_count():
    guard = LoginGuard(per_address=2, per_ip=100, clock=Clock())
    guard.failed("a", "ip")
    guard.succeeded("a")
    guard.failed("a", "ip")
    assert guard.locked("a", "ip") is None
