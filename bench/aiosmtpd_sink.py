"""An aiosmtpd server that accepts every message and keeps none: the reference for smtp_ingest.

Usage: ``python bench/aiosmtpd_sink.py PORT`` listens on 127.0.0.1:PORT until SIGTERM/SIGINT.
"""
import asyncio
import signal
import sys

from aiosmtpd.smtp import SMTP


class Discard:
    async def handle_DATA(self, server, session, envelope) -> str:
        return "250 OK"


def main() -> None:
    port = int(sys.argv[1])
    loop = asyncio.new_event_loop()
    # A fixed hostname: aiosmtpd would otherwise call socket.getfqdn() for every session.
    server = loop.run_until_complete(
        loop.create_server(lambda: SMTP(Discard(), hostname="sink.localhost"), "127.0.0.1", port)
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.close()


if __name__ == "__main__":
    main()
