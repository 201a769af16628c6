"""aioquic (PyPI) as a reference peer of quill's interop suite, hq-interop in both roles.

The command line and the JSON reports are those of `quinn-peer hq` and `quiche-peer hq`
(interop-tests/src/refpeers/hq.rs):

    python aioquic_peer.py hq server --testcase NAME --listen ADDR --root DIR
    python aioquic_peer.py hq client --testcase NAME --connect ADDR --download DIR \
        --files a,b [--files-from LIST] [--timeout-secs S]

Only aioquic's public API is used (aioquic.asyncio.serve/connect, QuicConfiguration,
QuicConnectionProtocol). aioquic offers secp256r1 first and cannot follow a
HelloRetryRequest, so a server must answer the share it is offered.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicProtocolVersion
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    StreamDataReceived,
    StreamReset,
)
from aioquic.tls import CipherSuite

STACK = "aioquic"
ALPN = "hq-interop"
EXIT_FAILURE = 3
EXIT_UNSUPPORTED = 127
MAX_REQUEST = 4096
MAX_FILE = 64 << 20
SMALL = (64 << 10, 128 << 10)
DEFAULT = (16 << 20, 16 << 20)

PROFILES = {
    "handshake": {}, "transferloss": {}, "transfercorruption": {}, "blackhole": {},
    "longrtt": {}, "goodput": {}, "ipv6": {}, "rebind-port": {}, "multiplexing": {},
    "rebind-addr": {},
    "transfer": {"small_windows": True},
    # The interop runner's endpoints play "transfer" with a chain of 9 certificates.
    "amplificationlimit": {"small_windows": True, "cert_chain_len": 9},
    "retry": {"retry": True},
    "chacha20": {"chacha20": True},
    "keyupdate": {"key_update": True},
    "v2": {"v2": True},
    "handshakeloss": {"connection_per_file": True},
    "handshakecorruption": {"connection_per_file": True},
    # The client probes and moves to a server's preferred address by itself (RFC 9000
    # section 9.6.1); the server has no option to offer one.
    "preferredaddress": {},
    # The interop runner's rule: the client migrates on its own initiative (the
    # server plays transfer).
    "connectionmigration": {"small_windows": True, "active_migration": True},
    # The first file over one connection, the rest over a second that resumes it
    # (session tickets), with its requests in 0-RTT for zerortt.
    "resumption": {"resume": True},
    "zerortt": {"resume": True, "zero_rtt": True},
}

CIPHERS = {0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384",
           0x1303: "TLS_CHACHA20_POLY1305_SHA256"}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def split_addr(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def configuration(profile, is_client):
    stream, conn = SMALL if profile.get("small_windows") else DEFAULT
    cfg = QuicConfiguration(is_client=is_client, alpn_protocols=[ALPN],
                            idle_timeout=30.0, max_data=conn, max_stream_data=stream)
    if profile.get("chacha20"):
        cfg.cipher_suites = [CipherSuite.CHACHA20_POLY1305_SHA256]
    if profile.get("v2"):
        # RFC 9368 compatible negotiation: start in v1, list v2 first (preferred); a
        # server takes the first version of the client's list that it supports.
        cfg.supported_versions = [QuicProtocolVersion.VERSION_2, QuicProtocolVersion.VERSION_1]
        if is_client:
            cfg.original_version = QuicProtocolVersion.VERSION_1
    if is_client:
        cfg.verify_mode = False  # the server's certificate is made at run time
        cfg.server_name = "localhost"
    return cfg


def negotiated(quic, alpn):
    cipher = None
    try:
        cipher = CIPHERS.get(int(quic.tls.key_schedule.cipher_suite))
    except Exception:  # the key schedule is internal; report what is there
        pass
    # aioquic does not expose the key-exchange group; the runner reads it off the
    # server's Initial (ServerHello).
    return {"version": "0x%08x" % quic._version if getattr(quic, "_version", None) else None,
            "alpn": alpn, "group": None, "cipher": cipher}


def resolve(root, req):
    if len(req) > MAX_REQUEST:
        raise ValueError("request too long")
    line = req.decode("utf-8").rstrip("\r\n")
    if not line.startswith("GET /"):
        raise ValueError("not a GET request")
    path = line[5:]
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") for p in parts) or any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ValueError("bad path")
    full = os.path.join(root, *parts)
    if not os.path.isfile(full) or os.path.getsize(full) > MAX_FILE:
        raise ValueError("not a servable file")
    with open(full, "rb") as f:
        return f.read()


# ----------------------------------------------------------------------------- server

class TicketStore:
    """The server's session tickets; each is used once (a replayed 0-RTT ticket fails)."""

    def __init__(self):
        self.tickets = {}

    def add(self, ticket):
        if len(self.tickets) < 1024:
            self.tickets[ticket.ticket] = ticket

    def pop(self, label):
        return self.tickets.pop(label, None)


SERVER = {"connections": 0, "files_served": 0, "refused": 0, "retry_sent": 0,
          "neg": {"version": None, "alpn": None, "group": None, "cipher": None}}


class HqServer(QuicConnectionProtocol):
    root = "."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = {}

    def quic_event_received(self, event):
        if isinstance(event, HandshakeCompleted):
            SERVER["connections"] += 1
            SERVER["neg"] = negotiated(self._quic, event.alpn_protocol)
        elif isinstance(event, StreamDataReceived):
            buf = self.requests.setdefault(event.stream_id, bytearray())
            buf.extend(event.data)
            if len(buf) > MAX_REQUEST:
                self.requests.pop(event.stream_id, None)
                self._quic.reset_stream(event.stream_id, 0x10)
                SERVER["refused"] += 1
            elif event.end_stream:
                req = bytes(self.requests.pop(event.stream_id))
                try:
                    data = resolve(self.root, req)
                except Exception:
                    self._quic.reset_stream(event.stream_id, 0x10)
                    SERVER["refused"] += 1
                else:
                    self._quic.send_stream_data(event.stream_id, data, end_stream=True)
                    SERVER["files_served"] += 1
            self.transmit()


async def run_server(a, profile):
    work = tempfile.TemporaryDirectory()
    cert, key = make_certificate(work.name, profile.get("cert_chain_len", 1))
    cfg = configuration(profile, is_client=False)
    cfg.load_cert_chain(cert, key)
    HqServer.root = a.root
    host, port = split_addr(a.listen)
    tickets = {}
    if profile.get("resume"):
        # aioquic issues tickets (allowing early data) only with a store.
        store = TicketStore()
        tickets = {"session_ticket_fetcher": store.pop, "session_ticket_handler": store.add}
    server = await serve(host, port, configuration=cfg, create_protocol=HqServer,
                         retry=bool(profile.get("retry")), **tickets)
    sock = server._transport.get_extra_info("sockname")
    addr = "[%s]:%d" % (sock[0], sock[1]) if ":" in sock[0] else "%s:%d" % (sock[0], sock[1])
    sys.stdout.write("listening %s\n" % addr)
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stdin():
        if not os.read(sys.stdin.fileno(), 256):
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    await stop.wait()
    if profile.get("retry"):
        # aioquic's server keeps no Retry counter; every validated connection had one.
        SERVER["retry_sent"] = SERVER["connections"]
    server.close()
    neg = SERVER.pop("neg")
    emit(dict({"role": "server", "stack": STACK}, **SERVER, **neg))
    work.cleanup()
    return 0


def make_certificate(directory, chain_len=1):
    """A fresh certificate for localhost (P-256), in `directory`: self-signed, or with
    `chain_len` > 1 issued through `chain_len - 1` CA certificates (leaf first in
    cert.pem), each padded with a 500-byte private extension as the Rust peers' chains
    (refpeers::ensure_certificate_chain)."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID, ObjectIdentifier

    now = datetime.datetime.now(datetime.timezone.utc)
    pad = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"),
                                     b"\x04\x82\x01\xf4" + bytes(500))

    def build(subject, issuer, public_key, signing_key, ca, padded):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(public_key).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=10)))
        if ca:
            b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        else:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                                critical=False)
        if padded:
            b = b.add_extension(pad, critical=False)
        return b.sign(signing_key, hashes.SHA256())

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    chain = []
    if chain_len <= 1:
        cert = build(name, name, key.public_key(), key, False, False)
    else:
        issuer_key = ec.generate_private_key(ec.SECP256R1())
        issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quill interop CA 0")])
        chain.append(build(issuer_name, issuer_name, issuer_key.public_key(), issuer_key, True, True))
        for i in range(1, chain_len - 1):
            k = ec.generate_private_key(ec.SECP256R1())
            n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quill interop CA %d" % i)])
            chain.append(build(n, issuer_name, k.public_key(), issuer_key, True, True))
            issuer_key, issuer_name = k, n
        cert = build(name, issuer_name, key.public_key(), issuer_key, False, True)
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
        for c in reversed(chain):
            f.write(c.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


# ----------------------------------------------------------------------------- client

class HqClient(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bodies = {}
        self.waiters = {}
        self.alpn = None
        self.resumed = False
        self.early_data_accepted = False

    def quic_event_received(self, event):
        if isinstance(event, HandshakeCompleted):
            self.alpn = event.alpn_protocol
            self.resumed = event.session_resumed
            self.early_data_accepted = event.early_data_accepted
        elif isinstance(event, StreamDataReceived):
            self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
            if event.end_stream and event.stream_id in self.waiters:
                self.waiters.pop(event.stream_id).set_result(bytes(self.bodies.pop(event.stream_id)))
        elif isinstance(event, StreamReset):
            w = self.waiters.pop(event.stream_id, None)
            if w:
                w.set_exception(ConnectionError("stream %d reset (0x%x)" % (event.stream_id, event.error_code)))
        elif isinstance(event, ConnectionTerminated):
            for w in self.waiters.values():
                if not w.done():
                    w.set_exception(ConnectionError("connection closed: 0x%x %s" % (event.error_code, event.reason_phrase)))
            self.waiters.clear()

    async def fetch(self, name):
        sid = self._quic.get_next_available_stream_id()
        fut = asyncio.get_running_loop().create_future()
        self.waiters[sid] = fut
        self._quic.send_stream_data(sid, ("GET /%s\r\n" % name).encode(), end_stream=True)
        self.transmit()
        return await fut


async def run_client(a, profile, tally, neg):
    files = [f for f in (a.files or "").split(",") if f]
    if a.files_from:
        with open(a.files_from) as f:
            files += [line.strip() for line in f if line.strip()]
    if not files:
        raise ValueError("no files to fetch; pass --files or --files-from")
    host, port = split_addr(a.connect)
    if profile.get("connection_per_file"):
        groups = [[f] for f in files]
    elif profile.get("resume") and len(files) > 1:
        groups = [files[:1], files[1:]]
    else:
        groups = [files]
    tickets = []
    for group in groups:
        cfg = configuration(profile, is_client=True)
        if tickets:
            cfg.session_ticket = tickets[-1]
        # zerortt: with a ticket, do not wait for the handshake; requests go in 0-RTT.
        early = bool(profile.get("zero_rtt")) and cfg.session_ticket is not None
        async with connect(host, port, configuration=cfg, create_protocol=HqClient,
                           session_ticket_handler=tickets.append,
                           wait_connected=not early) as client:
            tally["handshakes"] += 1
            tally["retries"] += 1 if getattr(client._quic, "_retry_count", 0) else 0
            if profile.get("key_update"):
                client._quic.request_key_update()
                client.transmit()
                tally["key_updates_initiated"] += 1
            sem = asyncio.Semaphore(100)

            async def one(name):
                async with sem:
                    data = await client.fetch(name)
                path = os.path.join(a.download, name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
                tally["files"] += 1
                tally["bytes"] += len(data)

            await asyncio.gather(*(one(n) for n in group))
            neg.update(negotiated(client._quic, client.alpn))
            if profile.get("resume"):
                tally["resumed"] = (tally["resumed"] or 0) + int(client.resumed)
                tally["zero_rtt_accepted"] = ((tally["zero_rtt_accepted"] or 0)
                                              + int(client.early_data_accepted))
            client.close()


async def client_main(a, profile):
    tally = {"handshakes": 0, "files": 0, "bytes": 0, "retries": 0, "key_updates_initiated": 0,
             "resumed": None, "zero_rtt_accepted": None}
    neg = {"version": None, "alpn": None, "group": None, "cipher": None}
    start = time.monotonic()
    error = None
    try:
        await asyncio.wait_for(run_client(a, profile, tally, neg), timeout=max(1, a.timeout_secs))
    except asyncio.TimeoutError:
        error = {"kind": "timeout", "message": "no result within %d s" % a.timeout_secs}
    except ConnectionError as e:
        error = {"kind": "closed_by_peer" if tally["handshakes"] else "handshake", "message": str(e)}
    except Exception as e:
        error = {"kind": "io", "message": "%s: %s" % (type(e).__name__, e)}
    secs = time.monotonic() - start
    emit(dict({"role": "client", "stack": STACK, "ok": error is None, "seconds": secs,
               "goodput_bps": tally["bytes"] * 8 / secs if secs > 0 else 0.0, "error": error},
              **tally, **neg))
    return 0 if error is None else EXIT_FAILURE


def main():
    p = argparse.ArgumentParser(prog="aioquic_peer.py")
    sub = p.add_subparsers(dest="mode", required=True)
    hq = sub.add_parser("hq").add_subparsers(dest="role", required=True)
    s = hq.add_parser("server")
    s.add_argument("--testcase", default="handshake")
    s.add_argument("--listen", default="127.0.0.1:0")
    s.add_argument("--root", required=True)
    s.add_argument("--state-dir")
    s.add_argument("--preferred-address")
    c = hq.add_parser("client")
    c.add_argument("--testcase", default="handshake")
    c.add_argument("--connect", required=True)
    c.add_argument("--download", required=True)
    c.add_argument("--files")
    c.add_argument("--files-from")
    c.add_argument("--timeout-secs", type=int, default=60)
    a = p.parse_args()
    if a.testcase == "ecn":
        # asyncio's datagram transport hands aioquic neither the TOS byte of received
        # datagrams nor a way to set it on sent ones.
        sys.stdout.write("unsupported aioquic neither reads nor sets ECN codepoints "
                         "(asyncio datagram transport)\n")
        sys.stdout.flush()
        return EXIT_UNSUPPORTED
    profile = PROFILES.get(a.testcase)
    if profile is None:
        sys.stdout.write("unsupported aioquic_peer.py does not know test case %s\n" % a.testcase)
        sys.stdout.flush()
        return EXIT_UNSUPPORTED
    if a.role == "server":
        if a.preferred_address:
            sys.stdout.write("unsupported aioquic's server cannot offer a preferred address\n")
            sys.stdout.flush()
            return EXIT_UNSUPPORTED
        return asyncio.run(run_server(a, profile))
    if profile.get("active_migration"):
        sys.stdout.write("unsupported aioquic_peer.py's client does not migrate to a new "
                         "local port yet (one socket per connection)\n")
        sys.stdout.flush()
        return EXIT_UNSUPPORTED
    return asyncio.run(client_main(a, profile))


if __name__ == "__main__":
    sys.exit(main())
