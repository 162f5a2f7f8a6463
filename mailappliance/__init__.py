"""mailappliance: a self-hosted SMTP/LMTP/IMAP mail server on gevent and MongoDB."""

__version__ = "0.1.0"
