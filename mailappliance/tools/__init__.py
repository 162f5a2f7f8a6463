"""Operator tools that talk to a live appliance from outside: the CLI's REST client and
the probes behind ``scripts/test-*``. Standard library only (plus python-dotenv when it
is installed), so they run with any ``python3`` next to the package, and never patch
with gevent."""
