"""TLS files: configured ones are used, bad ones give one clear error, none means self-signed."""
import ssl

import pytest

from mailappliance.settings import TlsFiles
from mailappliance.tls import TlsError, generate_self_signed, server_context


def test_generated_once_and_reused(tmp_path):
    cert, key = generate_self_signed(tmp_path / "tls", "mx.example.com")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    first = cert.read_bytes()
    assert generate_self_signed(tmp_path / "tls", "mx.example.com")[0].read_bytes() == first
    context = server_context(TlsFiles(), tmp_path, "mx.example.com")
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_configured_files_and_chain(tmp_path):
    cert, key = generate_self_signed(tmp_path / "elsewhere", "mail.example.org")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(cert.read_bytes())  # any PEM certificate stands in for a CA bundle here
    server_context(TlsFiles(key=str(key), cert=str(cert), ca=str(ca)), tmp_path / "data", "x")
    assert (tmp_path / "data" / "tls" / (cert.name + ".chain.pem")).read_bytes().count(b"BEGIN CERTIFICATE") == 2
    assert not (tmp_path / "data" / "tls" / "selfsigned-cert.pem").exists(), "configured files are used"


def test_bad_configuration_is_one_clear_error(tmp_path):
    cert, key = generate_self_signed(tmp_path, "x")
    with pytest.raises(TlsError, match="both"):
        server_context(TlsFiles(cert=str(cert)), tmp_path, "x")
    with pytest.raises(TlsError, match="cannot load TLS certificate"):
        server_context(TlsFiles(key=str(key), cert=str(tmp_path / "missing.pem")), tmp_path, "x")
