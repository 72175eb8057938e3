"""Certificates a test makes for the simulator's https listener: a CA, and server
certificates it signs (or that sign themselves, as an XCP-ng host's do)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pex.adapters.xen.simulator.server import TlsFiles


@dataclass(frozen=True)
class Issued:
    files: TlsFiles
    certificate: x509.Certificate

    @property
    def sha256(self) -> str:
        """The fingerprint as `openssl x509 -fingerprint -sha256` prints it (AB:CD:...)."""
        return ":".join(f"{b:02X}" for b in self.certificate.fingerprint(hashes.SHA256()))


class CertificateAuthority:
    def __init__(self, directory: Path, name: str = "PEX test CA"):
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            _builder(subject, subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = directory / f"{name.replace(' ', '-')}.pem"
        self.pem.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, addresses: list[str]) -> Issued:
        """A server certificate for `name` valid for the IP `addresses`."""
        return _server_certificate(self.directory, name, addresses, self.certificate.subject, self.key)


def self_signed(directory: Path, name: str, addresses: list[str]) -> Issued:
    """What an XCP-ng host generates for itself at installation."""
    return _server_certificate(directory, name, addresses, None, None)


def _server_certificate(directory: Path, name: str, addresses: list[str], issuer: x509.Name | None,
                        issuer_key: ec.EllipticCurvePrivateKey | None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        _builder(subject, issuer or subject, key.public_key())
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(name), *(x509.IPAddress(ipaddress.ip_address(a)) for a in addresses)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(issuer_key or key, hashes.SHA256())
    )
    certfile, keyfile = directory / f"{name}.crt", directory / f"{name}.key"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return Issued(TlsFiles(str(certfile), str(keyfile)), certificate)


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    # Valid from a day ago to a year ahead: any hour, any time zone.
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365)))
