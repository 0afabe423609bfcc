"""Serving beyond loopback: a key is required, the Host check takes the names the user allowed, and
HTTPS works with the user's own certificate (checked on 127.0.0.1 only)."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from engine_mlx.server.security import AccessPolicy

ROOT = Path(__file__).resolve().parent.parent


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "studio.local")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("studio.local"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_host_check_takes_the_allowed_names():
    policy = AccessPolicy("127.0.0.1", 8035, "k", (), ("studio.local",))
    headers = {"authorization": "Bearer k"}
    for host in ("127.0.0.1:8035", "localhost:8035", "studio.local:8035", "STUDIO.local:8035"):
        policy.check("GET", {**headers, "host": host.lower()})
    from engine_mlx.server.errors import ApiError

    for host in ("evil.example:8035", "studio.local:9999", ""):
        with pytest.raises(ApiError) as refused:
            policy.check("GET", {**headers, "host": host})
        assert refused.value.status == 403 and "--allow-host" in str(refused.value)
    # listening on one LAN address: that address is a valid Host too
    lan = AccessPolicy("192.168.1.20", 8035, "k")
    lan.check("GET", {**headers, "host": "192.168.1.20:8035"})
    with pytest.raises(ApiError):
        lan.check("GET", {**headers, "host": "attacker.example:8035"})
    # every interface, no names: key guards
    assert AccessPolicy("0.0.0.0", 8035, "k").allowed_hosts() is None


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine_mlx", "serve", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
        cwd=ROOT,
    )


def test_serving_beyond_loopback_refuses_to_start_without_a_key(tiny_text_model_dir, tmp_path):
    done = _serve("--model", str(tiny_text_model_dir), "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2
    assert (
        "--api-key" in done.stderr
        and "other machines" in done.stderr
        and "Traceback" not in done.stderr
    )
    half = _serve("--model", str(tiny_text_model_dir), "--tls-cert", str(tmp_path / "c.pem"))
    assert half.returncode == 2 and "go together" in half.stderr


def test_https_with_the_users_certificate(engine, tmp_path):
    from engine_mlx.jobs import EngineThread
    from engine_mlx.server.config import ServerConfig
    from engine_mlx.server.runner import ApiServer

    cert, key = _self_signed(tmp_path)
    jobs = EngineThread()
    server = ApiServer(
        engine,
        jobs,
        ServerConfig(
            port=0, api_key="secret", allow_hosts=("studio.local",), tls_cert=cert, tls_key=key
        ),
    )
    server.bind()
    server.start()
    try:
        assert server.base_url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False  # the Host header, not the TLS name, is what is checked here

        def get(host: str, key_: str = "secret") -> tuple[int, dict]:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", server.port, context=context, timeout=30
            )
            conn.request(
                "GET", "/v1/models", headers={"Host": host, "Authorization": f"Bearer {key_}"}
            )
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")

        status, body = get(f"studio.local:{server.port}")
        assert status == 200 and body["data"][0]["id"]
        assert get(f"evil.example:{server.port}")[0] == 403
        assert get(f"studio.local:{server.port}", "wrong")[0] == 401
        plain = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        with pytest.raises(
            (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)
        ):
            plain.request("GET", "/v1/models")
            plain.getresponse()
    finally:
        server.stop()
        jobs.close(timeout=5)
