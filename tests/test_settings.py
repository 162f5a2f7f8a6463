"""Settings from the environment: seed names, aliases, defaults, errors."""
import ipaddress

import pytest

from mailappliance.settings import Settings, SettingsError


def test_defaults_suit_a_non_root_user():
    s = Settings.from_env({})
    assert (s.smtp_port, s.submission_port, s.smtps_port, s.lmtp_port) == (2525, 2587, 2465, 2424)
    assert (s.api_port, s.mailbox_api_port, s.lmtp_ssl_port, s.lmtp_ssl_enabled) == (3000, 8080, 1024, False)
    assert s.embedded_database and str(s.data_dir) == "data"
    assert s.is_relay_client("127.0.0.1") and s.is_relay_client("::1") and not s.is_relay_client("192.0.2.1")
    assert s.is_relay_client("::ffff:127.0.0.5")


def test_seed_names_and_aliases():
    s = Settings.from_env({"SMTP_PORT": "2600", "LMTP_PORT": "2700", "LMTP_24_PORT": "2701", "ALLOWED_DOMAINS": "Example.COM, test.com.", "MAX_EMAIL_SIZE": "2048"})
    assert s.smtp_port == 2600, "SMTP_PORT is the seed's name for the port-25 role"
    assert s.lmtp_port == 2701, "LMTP_24_PORT wins over LMTP_PORT"
    assert s.allowed_domains == ["example.com", "test.com"]
    assert s.max_email_size == 2048


def test_zero_disables_and_auto_picks():
    s = Settings.from_env({"SMTP_465_PORT": "0", "API_PORT": "auto"})
    assert s.smtps_port == 0 and s.api_port == -1


def test_relay_networks():
    assert Settings.from_env({"RELAY_NETWORKS": ""}).relay_networks == []
    s = Settings.from_env({"RELAY_NETWORKS": "10.0.0.0/8, 2001:db8::/32"})
    assert s.relay_networks == [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]
    assert s.is_relay_client("10.1.2.3") and not s.is_relay_client("127.0.0.1")


@pytest.mark.parametrize(
    "env",
    [{"SMTP_25_PORT": "x"}, {"SMTP_25_PORT": "70000"}, {"RELAY_NETWORKS": "not-a-net"}, {"MAX_EMAIL_SIZE": "-1"}, {"SMTP_MAX_RECIPIENTS": "0"}],
)
def test_bad_values_raise_settings_error(env):
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_tls_files_fall_back_to_generic():
    s = Settings.from_env({"TLS_KEY": "/k", "TLS_CERT": "/c", "LMTP_SSL_KEY": "/lk", "LMTP_SSL_CERT": "/lc"})
    assert (s.smtp_tls.key, s.smtp_tls.cert) == ("/k", "/c")
    assert (s.lmtp_tls.key, s.lmtp_tls.cert) == ("/lk", "/lc")


def test_short_api_key_is_refused_but_unset_or_changeme_means_generate():
    with pytest.raises(SettingsError, match="at least 16"):
        Settings.from_env({"MAILBOX_API_KEY": "secret"})
    assert Settings.from_env({"MAILBOX_API_KEY": "changeme"}).mailbox_api_key == "changeme"
    assert Settings.from_env({}).max_connections_per_ip == 50


def test_access_log_redacts_the_api_key():
    import logging

    from mailappliance.app import _LogWriter

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("test.access")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    _LogWriter(logger).write('127.0.0.1 - - "GET /api/mailboxes?page=2&api_key=s3cr3t-key-0123456 HTTP/1.1" 200\n')
    assert "s3cr3t" not in records[0].getMessage() and "api_key=***" in records[0].getMessage()


def test_dotenv_file_is_read_and_the_environment_wins(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("SMTP_25_PORT=2600\nALLOWED_DOMAINS=from-dotenv.example\n")
    monkeypatch.setenv("DOTENV_PATH", str(env_file))
    monkeypatch.setenv("ALLOWED_DOMAINS", "from-env.example")
    monkeypatch.delenv("SMTP_25_PORT", raising=False)
    monkeypatch.delenv("SMTP_PORT", raising=False)
    try:
        s = Settings.from_env()
        assert s.smtp_port == 2600
        assert s.allowed_domains == ["from-env.example"]
    finally:
        import os

        os.environ.pop("SMTP_25_PORT", None)  # load_dotenv wrote it into the process environment


def test_outbound_settings():
    from mailappliance.settings import Settings, SettingsError

    s = Settings.from_env(
        {
            "DNS_SERVERS": "127.0.0.1:5353, [::1]:53, 10.0.0.1",
            "OUTBOUND_SMTP_PORT": "2525",
            "WEBHOOK_TIMEOUT": "2500",
            "IP_SELECTION_TIMEOUT": "750",
            "QUEUE_CONCURRENCY": "7",
            "DKIM_KEY_DIR": "/etc/dkim",
        }
    )
    assert s.dns_servers == [("127.0.0.1", 5353), ("::1", 53), ("10.0.0.1", 53)]
    assert s.outbound_smtp_port == 2525 and s.queue_concurrency == 7
    assert s.webhook_timeout == 2.5 and s.ip_selection_timeout == 0.75
    assert str(s.dkim_key_dir) == "/etc/dkim"
    defaults = Settings.from_env({})
    assert (defaults.outbound_smtp_port, defaults.queue_max_attempts, defaults.webhook_enabled) == (25, 0, False)
    for bad in ({"DNS_SERVERS": "dns.example:53"}, {"QUEUE_CONCURRENCY": "0"}, {"OUTBOUND_TLS": "must"}):
        try:
            Settings.from_env(bad)
            raise AssertionError(f"{bad} should be refused")
        except SettingsError:
            pass
