"""HTTPS for the emulator: a self-signed certificate it makes (``--tls``) or one given (``--cert``/``--key``).

The certificate made here names ``localhost``, ``127.0.0.1``, ``::1`` and the listening host, is
valid for a year and is its own issuer: a client trusts it by taking the certificate file as its
CA bundle (Python ``connection_verify=``, Node ``NODE_EXTRA_CA_CERTS``, curl/peeklock ``ca_file``).
It is made with the ``cryptography`` package, needed only for ``--tls``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from typing import List, Tuple

CERT_NAME = "peeklock-emulator-cert.pem"
KEY_NAME = "peeklock-emulator-key.pem"


def make_self_signed(directory: str, hosts: List[str]) -> Tuple[str, str]:
    """Write a certificate and its key under `directory` (kept if both are there and still valid
    for a day); returns (cert path, key path)."""
    cert_path = os.path.join(directory, CERT_NAME)
    key_path = os.path.join(directory, KEY_NAME)
    if _usable(cert_path, key_path, hosts):
        return cert_path, key_path
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise SystemExit(
            "error: --tls needs the 'cryptography' package (pip install cryptography), "
            "or give a certificate with --cert and --key"
        ) from None
    os.makedirs(directory, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: List[x509.GeneralName] = []
    for h in dict.fromkeys(["localhost", "127.0.0.1", "::1"] + hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(h))
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "peeklock emulator"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "peeklock (local testing only)"),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _usable(cert_path: str, key_path: str, hosts: List[str]) -> bool:
    if not (os.path.isfile(cert_path) and os.path.isfile(key_path)):
        return False
    try:
        from cryptography import x509
    except ImportError:
        return True
    try:
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    named = {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    return left > datetime.timedelta(days=1) and all(h.strip("[]") in named for h in hosts)


def server_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
