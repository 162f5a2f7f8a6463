"""Settings from the environment and a ``.env`` file.

Every variable of the seed's configuration block keeps its name and meaning; the
ones this project adds are documented in ``config/env.example``. A port of 0 means
"do not listen"; ``auto`` means "any free port" (see ``DATA_DIR/ports.json``).
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

# RFC 5321 §4.5.3.1: limits a server must at least accept.
COMMAND_LINE_LIMIT = 512
TEXT_LINE_LIMIT = 1000
# RFC 4954 §4: an AUTH line (with its initial response) may be up to 12288 octets.
AUTH_LINE_LIMIT = 12288
MIN_API_KEY_LENGTH = 16


class SettingsError(ValueError):
    """A setting has a value the appliance cannot use."""


def _bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _servers(value: str, default_port: int, name: str) -> list[tuple[str, int]]:
    """``host[:port]`` items (IPv6 as ``[addr]:port``), e.g. ``DNS_SERVERS=127.0.0.1:5353``."""
    servers = []
    for item in _csv(value):
        host, port = item, default_port
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest.startswith(":"):
                port = _port_of(rest[1:], name, item)
        elif item.count(":") == 1:
            host, raw = item.split(":")
            port = _port_of(raw, name, item)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise SettingsError(f"{name}: {item!r} is not an IP address[:port]") from None
        servers.append((host, port))
    return servers


def _port_of(raw: str, name: str, item: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SettingsError(f"{name}: {item!r} has a bad port")
    return int(raw)


@dataclass(frozen=True)
class TlsFiles:
    """Key, certificate and optional CA chain for one listener family."""

    key: Optional[str] = None
    cert: Optional[str] = None
    ca: Optional[str] = None


@dataclass
class Settings:
    # Network
    host: str = "0.0.0.0"
    hostname: str = field(default_factory=socket.getfqdn)
    smtp_port: int = 2525  # the port-25 role: inbound MX, no auth needed for local domains
    submission_port: int = 2587  # the port-587 role: STARTTLS then AUTH
    smtps_port: int = 2465  # the port-465 role: implicit TLS then AUTH
    lmtp_port: int = 2424
    lmtp_ssl_port: int = 1024
    lmtp_ssl_enabled: bool = False
    imap_port: int = 1143
    imap_ssl_port: int = 1993
    imap_ssl_enabled: bool = True
    api_port: int = 3000
    mailbox_api_port: int = 8080
    # Security
    mailbox_api_key: str = ""
    allowed_domains: list[str] = field(default_factory=list)
    relay_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(
        default_factory=lambda: [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    )
    allow_plaintext_auth: bool = False
    smtp_tls: TlsFiles = TlsFiles()
    lmtp_tls: TlsFiles = TlsFiles()
    imap_tls: TlsFiles = TlsFiles()
    # Limits
    max_email_size: int = 10 * 1024 * 1024
    max_recipients: int = 100
    max_bad_commands: int = 20
    smtp_idle_timeout: float = 300.0  # RFC 5321 §4.5.3.2.7: five minutes
    max_connections: int = 1000
    max_connections_per_ip: int = 50  # RELAY_NETWORKS are exempt; 0 = no limit
    mailbox_quota: int = 0  # default per-mailbox quota in bytes; 0 means unlimited
    shutdown_timeout: float = 30.0
    # Storage
    mongodb_url: str = "embedded"
    data_dir: Path = Path("data")
    embedded_cache_size: str = "256M"
    # Logging
    log_level: str = "info"
    enable_console_log: bool = True
    log_file: Optional[str] = None
    # Outbound delivery (issue 4): queue runner, MX delivery, source IP, DKIM, webhooks
    queue_enabled: bool = True
    queue_concurrency: int = 50
    queue_domain_concurrency: int = 20
    queue_retry_base: float = 60.0  # seconds before the first retry; doubles each attempt
    queue_retry_max: float = 4 * 3600.0  # longest wait between two attempts
    queue_max_attempts: int = 0  # 0: no limit, QUEUE_MAX_AGE decides when a deferred recipient bounces
    queue_max_age: float = 5 * 24 * 3600.0  # seconds after which a deferred recipient bounces
    queue_lease: float = 300.0  # a claim expires this long after its last renewal
    queue_poll_interval: float = 1.0
    dns_servers: list[tuple[str, int]] = field(default_factory=list)  # empty: the system resolver
    dns_timeout: float = 5.0
    outbound_smtp_port: int = 25
    # Per-stage timeouts in seconds, RFC 5321 §4.5.3.2 defaults (connect: the TCP handshake only)
    outbound_connect_timeout: float = 30.0
    outbound_greeting_timeout: float = 300.0
    outbound_command_timeout: float = 300.0  # MAIL, RCPT and the other commands
    outbound_data_init_timeout: float = 120.0
    outbound_data_block_timeout: float = 180.0
    outbound_data_end_timeout: float = 600.0
    outbound_tls: str = "may"  # "may" (opportunistic, like Postfix) or "none"
    smtp_relay_host: Optional[str] = None
    smtp_relay_port: int = 587
    smtp_relay_user: Optional[str] = None
    smtp_relay_password: Optional[str] = field(default=None, repr=False)
    dkim_selector: str = "mail"
    dkim_key_dir: Optional[Path] = None  # <domain>.pem (or .key) per signing domain
    webhook_enabled: bool = False
    webhook_success_url: Optional[str] = None
    webhook_failure_url: Optional[str] = None
    webhook_timeout: float = 10.0  # seconds (WEBHOOK_TIMEOUT is given in milliseconds)
    webhook_retries: int = 3
    webhook_retry_base: float = 2.0  # seconds; doubles each retry
    webhook_secret: Optional[str] = field(default=None, repr=False)
    ip_selection_enabled: bool = False
    ip_selection_api_url: Optional[str] = None
    ip_selection_timeout: float = 5.0  # seconds (IP_SELECTION_TIMEOUT is given in milliseconds)
    ip_selection_retries: int = 3
    ip_selection_cache_ttl: float = 300.0
    fallback_ip: Optional[str] = None

    @property
    def embedded_database(self) -> bool:
        return self.mongodb_url in ("", "embedded")

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None, dotenv: bool = True) -> "Settings":
        """Build settings from ``env`` (default ``os.environ`` after loading ``.env``)."""
        if env is None:
            if dotenv:
                from dotenv import load_dotenv

                load_dotenv(os.environ.get("DOTENV_PATH", ".env"), override=False)
            env = os.environ
        return cls._from_mapping(env)

    @classmethod
    def _from_mapping(cls, env: Mapping[str, str]) -> "Settings":
        def get(*names: str) -> Optional[str]:
            for name in names:
                value = env.get(name)
                if value is not None and value.strip() != "":
                    return value.strip()
            return None

        def port(default: int, *names: str) -> int:
            raw = get(*names)
            if raw is None:
                return default
            if raw.lower() == "auto":
                return -1  # any free port (tests and scripts read DATA_DIR/ports.json)
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(f"{names[0]} must be a port number, not {raw!r}") from None
            if not 0 <= value <= 65535:
                raise SettingsError(f"{names[0]} must be between 0 and 65535, not {value}")
            return value

        def number(default: float, name: str, kind: type = int) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a number, not {raw!r}") from None
            if value < 0:
                raise SettingsError(f"{name} must not be negative")
            return value

        def flag(default: bool, name: str) -> bool:
            raw = get(name)
            return default if raw is None else _bool(raw)

        def tls(prefix: str) -> TlsFiles:
            return TlsFiles(
                key=get(f"{prefix}_SSL_KEY", "TLS_KEY"),
                cert=get(f"{prefix}_SSL_CERT", "TLS_CERT"),
                ca=get(f"{prefix}_SSL_CA", "TLS_CA"),
            )

        relay_raw = env.get("RELAY_NETWORKS")
        relay: list = []
        if relay_raw is None:
            relay = cls().relay_networks
        else:
            for item in _csv(relay_raw):
                try:
                    relay.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise SettingsError(f"RELAY_NETWORKS: {item!r} is not a network (CIDR)") from None

        s = cls(
            host=get("SMTP_HOST", "HOST") or "0.0.0.0",
            hostname=get("SMTP_HOSTNAME", "HOSTNAME_FQDN") or socket.getfqdn(),
            # The role-specific names win over the seed's generic aliases.
            smtp_port=port(2525, "SMTP_25_PORT", "SMTP_PORT"),
            submission_port=port(2587, "SMTP_587_PORT"),
            smtps_port=port(2465, "SMTP_465_PORT"),
            lmtp_port=port(2424, "LMTP_24_PORT", "LMTP_PORT"),
            lmtp_ssl_port=port(1024, "LMTP_SSL_PORT"),
            lmtp_ssl_enabled=flag(False, "LMTP_SSL_ENABLED"),
            imap_port=port(1143, "IMAP_143_PORT", "IMAP_PORT"),
            imap_ssl_port=port(1993, "IMAP_993_PORT", "IMAP_SSL_PORT"),
            imap_ssl_enabled=flag(True, "IMAP_SSL_ENABLED"),
            api_port=port(3000, "API_PORT"),
            mailbox_api_port=port(8080, "MAILBOX_API_PORT"),
            mailbox_api_key=get("MAILBOX_API_KEY") or "",
            allowed_domains=[d.lower().rstrip(".") for d in _csv(env.get("ALLOWED_DOMAINS", ""))],
            relay_networks=relay,
            allow_plaintext_auth=flag(False, "ALLOW_PLAINTEXT_AUTH"),
            smtp_tls=tls("SMTP"),
            lmtp_tls=tls("LMTP"),
            imap_tls=tls("IMAP"),
            max_email_size=int(number(10 * 1024 * 1024, "MAX_EMAIL_SIZE")),
            max_recipients=int(number(100, "SMTP_MAX_RECIPIENTS")),
            max_bad_commands=int(number(20, "SMTP_MAX_BAD_COMMANDS")),
            smtp_idle_timeout=float(number(300.0, "SMTP_IDLE_TIMEOUT", float)),
            max_connections=int(number(1000, "MAX_CONNECTIONS")),
            max_connections_per_ip=int(number(50, "MAX_CONNECTIONS_PER_IP")),
            mailbox_quota=int(number(0, "MAILBOX_QUOTA")),
            shutdown_timeout=float(number(30.0, "SHUTDOWN_TIMEOUT", float)),
            mongodb_url=get("MONGODB_URL") or "embedded",
            data_dir=Path(get("DATA_DIR") or "data"),
            embedded_cache_size=get("EMBEDDED_DB_CACHE_SIZE") or "256M",
            log_level=(get("LOG_LEVEL") or "info").lower(),
            enable_console_log=flag(True, "ENABLE_CONSOLE_LOG"),
            log_file=get("LOG_FILE"),
            queue_enabled=flag(True, "QUEUE_ENABLED"),
            queue_concurrency=int(number(50, "QUEUE_CONCURRENCY")),
            queue_domain_concurrency=int(number(20, "QUEUE_DOMAIN_CONCURRENCY")),
            queue_retry_base=float(number(60.0, "QUEUE_RETRY_BASE", float)),
            queue_retry_max=float(number(4 * 3600.0, "QUEUE_RETRY_MAX", float)),
            queue_max_attempts=int(number(0, "QUEUE_MAX_ATTEMPTS")),
            queue_max_age=float(number(5 * 24 * 3600.0, "QUEUE_MAX_AGE", float)),
            queue_lease=float(number(300.0, "QUEUE_LEASE", float)),
            queue_poll_interval=float(number(1.0, "QUEUE_POLL_INTERVAL", float)),
            dns_servers=_servers(env.get("DNS_SERVERS", ""), 53, "DNS_SERVERS"),
            dns_timeout=float(number(5.0, "DNS_TIMEOUT", float)),
            outbound_smtp_port=port(25, "OUTBOUND_SMTP_PORT"),
            outbound_connect_timeout=float(number(30.0, "OUTBOUND_CONNECT_TIMEOUT", float)),
            outbound_greeting_timeout=float(number(300.0, "OUTBOUND_GREETING_TIMEOUT", float)),
            outbound_command_timeout=float(number(300.0, "OUTBOUND_COMMAND_TIMEOUT", float)),
            outbound_data_init_timeout=float(number(120.0, "OUTBOUND_DATA_INIT_TIMEOUT", float)),
            outbound_data_block_timeout=float(number(180.0, "OUTBOUND_DATA_BLOCK_TIMEOUT", float)),
            outbound_data_end_timeout=float(number(600.0, "OUTBOUND_DATA_END_TIMEOUT", float)),
            outbound_tls=(get("OUTBOUND_TLS") or "may").lower(),
            smtp_relay_host=get("SMTP_RELAY_HOST"),
            smtp_relay_port=port(587, "SMTP_RELAY_PORT"),
            smtp_relay_user=get("SMTP_RELAY_USER"),
            smtp_relay_password=get("SMTP_RELAY_PASSWORD"),
            dkim_selector=get("DKIM_SELECTOR") or "mail",
            dkim_key_dir=Path(get("DKIM_KEY_DIR")) if get("DKIM_KEY_DIR") else None,  # type: ignore[arg-type]
            webhook_enabled=flag(False, "WEBHOOK_ENABLED"),
            webhook_success_url=get("WEBHOOK_SUCCESS_URL"),
            webhook_failure_url=get("WEBHOOK_FAILURE_URL"),
            webhook_timeout=float(number(10000, "WEBHOOK_TIMEOUT", float)) / 1000.0,
            webhook_retries=int(number(3, "WEBHOOK_RETRIES")),
            webhook_retry_base=float(number(2.0, "WEBHOOK_RETRY_BASE", float)),
            webhook_secret=get("WEBHOOK_SECRET"),
            ip_selection_enabled=flag(False, "IP_SELECTION_ENABLED"),
            ip_selection_api_url=get("IP_SELECTION_API_URL"),
            ip_selection_timeout=float(number(5000, "IP_SELECTION_TIMEOUT", float)) / 1000.0,
            ip_selection_retries=int(number(3, "IP_SELECTION_RETRIES")),
            ip_selection_cache_ttl=float(number(300.0, "IP_SELECTION_CACHE_TTL", float)),
            fallback_ip=get("FALLBACK_IP"),
        )
        if s.max_recipients < 1:
            raise SettingsError("SMTP_MAX_RECIPIENTS must be at least 1")
        if s.mailbox_api_key not in ("", "changeme") and len(s.mailbox_api_key) < MIN_API_KEY_LENGTH:
            raise SettingsError(
                f"MAILBOX_API_KEY must be at least {MIN_API_KEY_LENGTH} characters "
                "(or unset, to have a random one generated)"
            )
        if s.max_email_size < 1024:
            raise SettingsError("MAX_EMAIL_SIZE must be at least 1024 bytes")
        if s.queue_concurrency < 1 or s.queue_domain_concurrency < 1:
            raise SettingsError("QUEUE_CONCURRENCY and QUEUE_DOMAIN_CONCURRENCY must be at least 1")
        if s.queue_max_attempts < 0:
            raise SettingsError("QUEUE_MAX_ATTEMPTS must be 0 (no limit: QUEUE_MAX_AGE decides) or more")
        if s.queue_lease < 10:
            raise SettingsError("QUEUE_LEASE must be at least 10 seconds")
        if s.outbound_tls not in ("may", "none"):
            raise SettingsError(f"OUTBOUND_TLS must be 'may' or 'none', not {s.outbound_tls!r}")
        if s.outbound_smtp_port < 1:
            raise SettingsError("OUTBOUND_SMTP_PORT must be a port number (1-65535)")
        return s

    def is_relay_client(self, address: str) -> bool:
        """True when ``address`` lies inside ``RELAY_NETWORKS``."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.relay_networks)
