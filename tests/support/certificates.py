"""A throwaway certificate authority for TLS tests: a CA and a server certificate for 127.0.0.1, made with `openssl`.

`cryptography` is not a dependency, and the `openssl` command line is on every machine that runs these tests; EC keys
keep generation to a few milliseconds.
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA's certificate (what a client trusts) and a server certificate and key it signed."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting the signed certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_authority(directory: Path, name: str = "haimaker test CA") -> CertificateAuthority:
    """Create a CA in `directory` and sign a server certificate for 127.0.0.1 and localhost with it."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_file = directory / "ca.key", directory / "ca.pem"
    key_file, csr_file, cert_file = directory / "server.key", directory / "server.csr", directory / "server.pem"
    extensions = directory / "server.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_file, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl("req", *ec, "-keyout", key_file, "-out", csr_file, "-subj", "/CN=127.0.0.1")
    _openssl(
        "x509", "-req", "-in", csr_file, "-CA", ca_file, "-CAkey", ca_key, "-CAcreateserial", "-out", cert_file,
        "-days", "2", "-extfile", extensions,
    )  # fmt: skip
    return CertificateAuthority(ca_file=ca_file, cert_file=cert_file, key_file=key_file)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)
