"""What the CLI and ``scripts/test-*`` share about their terminal: asking for a password
and going quiet when the reader of their output has gone away.

* A password is only asked for when standard input is a terminal. Without one (cron, a
  pipe, ``ssh host cmd``) ``getpass`` would fall back to reading standard input with a
  warning and die on EOF; the tools say instead to use ``--password-stdin``.
* ``tool | head -1``: when ``head`` exits, the next write gets EPIPE (Python ignores
  SIGPIPE, so it is a ``BrokenPipeError``). The tools then point standard output at
  ``/dev/null`` (so the flush at exit cannot fail again) and exit with
  :data:`SIGPIPE_EXIT`, 128 + SIGPIPE, what a shell reports for a program killed by
  SIGPIPE (``yes | head -1``): nothing is printed, and ``set -o pipefail`` still sees
  that the output was cut short.
"""
from __future__ import annotations

import getpass
import os
import sys
from typing import Optional, TextIO

SIGPIPE_EXIT = 141  # 128 + SIGPIPE (13)
INTERRUPTED_EXIT = 130  # 128 + SIGINT (2)


class NoPassword(Exception):
    """No password could be asked for, or none was given (a usage problem: exit 2)."""


class OutputClosed(Exception):
    """Standard output's reader has gone (not an OSError, so no network handler takes it)."""


def ask_password(prompt: str, stdin: Optional[TextIO] = None) -> str:
    """``getpass`` on a terminal; :class:`NoPassword` without one or on end of input (Ctrl-D).
    Ctrl-C raises ``KeyboardInterrupt`` as usual (the callers exit 130)."""
    stream = sys.stdin if stdin is None else stdin
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):
        interactive = False
    if not interactive:
        raise NoPassword("standard input is not a terminal, so the password cannot be asked for: use --password-stdin")
    try:
        return getpass.getpass(prompt)
    except EOFError:
        print("", file=sys.stderr)
        raise NoPassword("no password given (end of input)") from None


def silence_stdout(stream: Optional[TextIO] = None) -> None:
    """Point standard output at /dev/null after a ``BrokenPipeError`` (the Python docs' recipe)."""
    target = sys.stdout if stream is None else stream
    try:
        fd = target.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
