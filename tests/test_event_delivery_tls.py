"""With HUB_EVENT_PRIVATE_URLS=false the deliverer connects to the address
it checked (``https://<address>``, the host's name as SNI and Host). Its
connections are not kept: pooled by that address, one would carry an event for
another host there (a CDN's shared address; a name an attacker's DNS points
there) over a TLS session whose certificate was checked for the first host."""

from __future__ import annotations

import asyncio
import datetime
import http.server
import socket
import ssl
import threading

import httpx
import pytest

import hub.services.events as events_module
from hub.events import emit
from hub.services import events as service
from hub.services.events import EventDeliverer
from tests.test_events import deliveries, hub_with_a_connection


def _certificates(tmp_path):
    """A CA, and a server certificate of it for a.example only: (CA file, cert file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "review7 CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.example")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS server on loopback holding a certificate of a.example only;
    notes each request's (SNI, Host)."""
    ca, cert, key = _certificates(tmp_path)
    seen: list[tuple[str | None, str]] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    sni: dict[int, str | None] = {}

    def remember(sock, name, _context):
        sni[id(sock)] = name

    context.sni_callback = remember

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # (keep-alive: the client may keep the connection)

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append((sni.get(id(self.connection)), self.headers["Host"]))
            # a.example is down for a moment (a short error answer, read whole); b.example is fine
            status = 503 if self.headers["Host"].startswith("a.example") else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], ca, seen
    server.shutdown()
    server.server_close()


def test_an_event_for_a_host_sharing_an_address_is_not_sent_over_another_hosts_connection(
        settings, tls_server, monkeypatch):
    port, ca, seen = tls_server
    hub, org_id, connection_id = hub_with_a_connection(settings)
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # a.example and b.example both at one address
        name = host.decode() if isinstance(host, bytes) else host
        if name in ("a.example", "b.example"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(hub.settings, "event_private_urls", False)
    real_private = events_module._private_address  # (loopback stands for a public address here)
    monkeypatch.setattr(events_module, "_private_address", lambda host, addresses: None if host in (
        "a.example", "b.example") else real_private(host, addresses))
    service.create_endpoint(hub, org_id, url=f"https://a.example:{port}/hook", events=["sync.failed"],
                            description=None, enabled=True)
    service.create_endpoint(hub, org_id, url=f"https://b.example:{port}/hook", events=["connection.status_changed"],
                            description=None, enabled=True)
    async def scenario() -> None:
        # (The hub's client, trusting this test's CA as it trusts the public ones.)
        deliverer = EventDeliverer(hub, transport=httpx.AsyncHTTPTransport(verify=ssl.create_default_context(
            cafile=str(ca))))
        try:
            with hub.session() as session:
                emit(session, org_id, "sync.failed", {"connection_id": connection_id, "run": {}})
                session.commit()
            assert await deliverer.deliver_once() == 1  # to a.example (its certificate, verified): a 503
            hub.mark(connection_id, "error", "refused")  # to b.example, which has no certificate there
            assert await deliverer.deliver_once() == 1
        finally:
            await deliverer.stop()

    asyncio.run(scenario())
    hosts = {e.id: httpx.URL(e.url).host for e in service.list_endpoints(hub, org_id)}
    by_url = {hosts[d.endpoint_id]: d for d in deliveries(hub)}
    assert by_url["a.example"].response_status == 503
    assert by_url["b.example"].status != "delivered", (
        f"b.example's event was delivered, over a TLS connection whose certificate was only checked for "
        f"a.example: the server saw (SNI, Host) = {seen}")
