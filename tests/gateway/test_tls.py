"""TLS and mutual TLS to the coordinator, with certificates made on the fly."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scaimind.v1 import coordinator_pb2_grpc
from tests.conftest import auth, gateway_settings
from tests.gateway.conftest import PREFIX, ScriptedCoordinator, running_gateway


@dataclass(frozen=True)
class Pki:
    """PEM files of a CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: bytes
    server_key: bytes
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("test-ca", ca_key, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue("coordinator", server_key, (ca_cert.subject, ca_key), ip="127.0.0.1")
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _issue("gateway", client_key, (ca_cert.subject, ca_key))
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _issue("other-ca", other_key, None, ca=True)
    files = {
        "ca.pem": _pem(ca_cert),
        "client.pem": _pem(client_cert),
        "client.key": _pem(client_key),
        "other-ca.pem": _pem(other_ca),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return Pki(
        ca=root / "ca.pem",
        server_cert=_pem(server_cert),
        server_key=_pem(server_key),
        client_cert=root / "client.pem",
        client_key=root / "client.key",
        other_ca=root / "other-ca.pem",
    )


async def _tls_server(
    pki: Pki, *, require_client_cert: bool
) -> tuple[grpc.aio.Server, ScriptedCoordinator, int]:
    servicer = ScriptedCoordinator()  # type: ignore[abstract]
    server = grpc.aio.server()
    coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(servicer, server)
    creds = grpc.ssl_server_credentials(
        [(pki.server_key, pki.server_cert)],
        root_certificates=pki.ca.read_bytes() if require_client_cert else None,
        require_client_auth=require_client_cert,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, servicer, port


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[tuple[ScriptedCoordinator, int]]:
    server, servicer, port = await _tls_server(pki, require_client_cert=False)
    yield servicer, port
    await server.stop(None)


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[tuple[ScriptedCoordinator, int]]:
    server, servicer, port = await _tls_server(pki, require_client_cert=True)
    yield servicer, port
    await server.stop(None)


async def test_tls_with_the_right_ca(
    tls_server: tuple[ScriptedCoordinator, int], pki: Pki, tmp_path: Path
) -> None:
    servicer, port = tls_server
    settings = gateway_settings(tmp_path, port, tls_enabled=True, tls_ca_path=pki.ca)
    async with running_gateway(settings) as client:
        r = await client.get(f"{PREFIX}/jobs", headers=auth())
    assert r.status_code == 200, r.text
    assert [c.rpc for c in servicer.calls] == ["ListJobs"]


async def test_tls_with_an_untrusted_certificate_is_unavailable(
    tls_server: tuple[ScriptedCoordinator, int], pki: Pki, tmp_path: Path
) -> None:
    servicer, port = tls_server
    settings = gateway_settings(
        tmp_path,
        port,
        grpc_timeout_s=0.5,
        tls_enabled=True,
        tls_ca_path=pki.other_ca,
    )
    async with running_gateway(settings) as client:
        r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=auth())
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "BACKEND_UNAVAILABLE"
    assert servicer.calls == []


async def test_plaintext_gateway_cannot_talk_to_a_tls_coordinator(
    tls_server: tuple[ScriptedCoordinator, int], tmp_path: Path
) -> None:
    servicer, port = tls_server
    settings = gateway_settings(tmp_path, port, grpc_timeout_s=0.5)
    async with running_gateway(settings) as client:
        r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=auth())
    assert r.status_code == 503
    assert servicer.calls == []


@pytest.mark.parametrize("with_client_cert", [True, False])
async def test_mutual_tls(
    mtls_server: tuple[ScriptedCoordinator, int],
    pki: Pki,
    tmp_path: Path,
    with_client_cert: bool,
) -> None:
    servicer, port = mtls_server
    client_files = (
        {"tls_cert_path": pki.client_cert, "tls_key_path": pki.client_key}
        if with_client_cert
        else {}
    )
    settings = gateway_settings(
        tmp_path,
        port,
        grpc_timeout_s=0.5,
        tls_enabled=True,
        tls_ca_path=pki.ca,
        **client_files,
    )
    async with running_gateway(settings) as client:
        r = await client.post(f"{PREFIX}/jobs/job_1/cancel", headers=auth())
    if with_client_cert:
        assert r.status_code == 200, r.text
        assert [c.rpc for c in servicer.calls] == ["CancelJob"]
    else:
        assert r.status_code == 503
        assert servicer.calls == []
