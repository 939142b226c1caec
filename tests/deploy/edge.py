"""What production puts in front of the API, as real processes: nginx (Debian's package)
terminating TLS with a certificate made for the test, in front of several API processes, written
the way an ingress proxies (X-Forwarded-For appended, -Proto and -Host set, no buffering)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
import ipaddress
from pathlib import Path
import shutil
import signal
import ssl
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devtools.tansu import free_port
from tests.processes import listens

# The header that picks a replica; without it, nginx takes turns.
REPLICA_HEADER = "X-Replica"


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def client_tls(cert_path: Path) -> ssl.SSLContext:
    """What a client that trusts the test's certificate connects with."""
    return ssl.create_default_context(cafile=str(cert_path))


_CONFIG = """
worker_processes 1;
pid {folder}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    upstream api {{ {servers} }}
    {replicas}
    map $http_x_replica $backend {{ default api; {choices} }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://$backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            # A live update stream: each event as it comes, and a read timeout above its keepalive.
            proxy_buffering off;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


@contextmanager
def nginx(folder: Path, upstreams: dict[str, int]) -> Iterator[int]:
    """nginx on a free port, terminating TLS for the `upstreams` (name: port of an API process);
    yields its port. A request with `X-Replica: <name>` goes to that one."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx is not installed: `make test` installs Debian's nginx-light")
    cert, key = make_certificate(folder)
    port = free_port()
    servers = " ".join(f"server 127.0.0.1:{p};" for p in upstreams.values())
    replicas = "\n".join(f"upstream replica_{n} {{ server 127.0.0.1:{p}; }}" for n, p in upstreams.items())
    choices = " ".join(f"{n} replica_{n};" for n in upstreams)
    config = folder / "nginx.conf"
    config.write_text(
        _CONFIG.format(
            folder=folder, servers=servers, replicas=replicas, choices=choices, port=port, cert=cert, key=key
        )
    )
    process = subprocess.Popen(
        [binary, "-p", str(folder), "-c", str(config), "-e", str(folder / "error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not listens(port, process):
            raise RuntimeError(f"nginx did not start: {(folder / 'error.log').read_text()}")
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
