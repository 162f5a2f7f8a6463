"""``python -m mailappliance [serve]`` runs the appliance (patched with gevent first);
``python -m mailappliance mailbox|queue ...`` runs the operator CLI (``cli.py``), which
talks to a running appliance over HTTP and needs no gevent."""
import sys

_args = sys.argv[1:]
if _args and (_args[0] != "serve" or "-h" in _args or "--help" in _args):
    from mailappliance.cli import main as cli_main

    sys.exit(cli_main(_args))

from gevent import monkey  # noqa: E402

monkey.patch_all()

from mailappliance.app import main  # noqa: E402

sys.exit(main(_args[1:]))
