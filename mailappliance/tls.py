"""TLS for STARTTLS (RFC 3207, RFC 2595) and implicit-TLS ports (RFC 8314).

Uses the configured key and certificate; when none is configured, a self-signed
certificate is generated once into ``DATA_DIR/tls`` with ``cryptography`` so that
STARTTLS and ports 465/993 work out of the box.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
from pathlib import Path
from typing import Optional

from mailappliance.settings import TlsFiles

log = logging.getLogger("mailappliance.tls")

CERT_NAME = "selfsigned-cert.pem"
KEY_NAME = "selfsigned-key.pem"
VALID_DAYS = 3650


class TlsError(RuntimeError):
    pass


def generate_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """Create (once) a self-signed certificate for ``hostname``, localhost and 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "localhost")])
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    if hostname and hostname != "localhost":
        alt_names.insert(0, x509.DNSName(hostname))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("generated a self-signed TLS certificate for %s in %s", hostname, directory)
    return cert_path, key_path


def server_context(files: TlsFiles, data_dir: Path, hostname: str) -> ssl.SSLContext:
    """A server SSLContext (TLS 1.2+) from ``files``, or from the generated certificate."""
    cert: Optional[str] = files.cert
    key: Optional[str] = files.key
    if bool(cert) != bool(key):
        raise TlsError("set both the TLS key and the certificate, or neither")
    if not cert:
        cert_path, key_path = generate_self_signed(data_dir / "tls", hostname)
        cert, key = str(cert_path), str(key_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if files.ca:
            # Serve the chain: the certificate followed by the CA bundle.
            chain = data_dir / "tls" / (Path(cert).name + ".chain.pem")
            chain.parent.mkdir(parents=True, exist_ok=True)
            chain.write_bytes(Path(cert).read_bytes().rstrip(b"\n") + b"\n" + Path(files.ca).read_bytes())
            cert = str(chain)
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from None
    return context
