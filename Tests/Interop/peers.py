"""Helpers for the peer-wire interop tests (and the seeding benchmark): libtorrent
sessions on their own loopback addresses, waiting for a download, a tiny HTTP tracker
for clients that cannot be told a peer directly, raw peer-wire messages, and /proc
readings of a process.

Plain functions and classes only, no pytest fixtures: conftest.py owns those.
Every process and thread started here is stopped by whoever started it.
"""

import hashlib
import os
import socket
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import libtorrent as lt

from conftest import bencode  # noqa: F401  (the tests and benchmarks take it from here too)

KiB = 1 << 10
MiB = 1 << 20
SOCKET_BUFFER = 4 * MiB
PROTOCOL = b"\x13BitTorrent protocol"

# --------------------------------------------------------------------------- torrents


def make_torrent(source: Path, output: Path, piece_length: int, tracker: str = None) -> Path:
    """A plain v1 torrent (libtorrent, v1_only; files in byte-wise path order, as
    conftest.libtorrent_create does) announcing to `tracker`, if given."""
    files = lt.file_storage()
    if source.is_file():
        files.add_file(source.name, source.stat().st_size)
    else:
        entries = []
        for directory, _, names in os.walk(source):
            for name in names:
                path = Path(directory, name)
                entries.append((path.relative_to(source).as_posix(), path.stat().st_size))
        for relative, size in sorted(entries, key=lambda entry: entry[0].encode()):
            files.add_file(f"{source.name}/{relative}", size)
    torrent = lt.create_torrent(files, piece_length, flags=lt.create_torrent.v1_only)
    if tracker:
        torrent.add_tracker(tracker)
    lt.set_piece_hashes(torrent, str(source.parent))
    output.write_bytes(lt.bencode(torrent.generate()))
    return output


def info_hash_bytes(torrent: Path) -> bytes:
    hashes = lt.torrent_info(str(torrent)).info_hashes()
    return bytes.fromhex(str(hashes.v1))


def tree_digest(root: Path) -> dict:
    """{relative path: (size, sha1)} of every file under `root` (or of `root` itself)."""
    root = Path(root)
    paths = [root] if root.is_file() else [Path(d, n) for d, _, names in os.walk(root) for n in names]
    result = {}
    for path in paths:
        digest = hashlib.sha1()
        with open(path, "rb") as handle:
            while chunk := handle.read(4 * MiB):
                digest.update(chunk)
        key = path.name if root.is_file() else path.relative_to(root).as_posix()
        result[key] = (path.stat().st_size, digest.hexdigest())
    return result


def file_sha1(path: Path) -> str:
    return tree_digest(Path(path))[Path(path).name][1]


# --------------------------------------------------------------------------- libtorrent


def lt_session(address: str, *, port: int = 0, extra: dict = None) -> "lt.session":
    """A libtorrent session bound to its own loopback address (libtorrent keys peers by
    IP), TCP only, plaintext, no DHT/LSD/UPnP/NAT-PMP, 4 MiB socket buffers."""
    settings = {
        "listen_interfaces": f"{address}:{port}",
        "outgoing_interfaces": address,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_tcp": True,
        "enable_incoming_tcp": True,
        "out_enc_policy": 2,  # pe_disabled: plaintext BitTorrent only
        "in_enc_policy": 1,
        "recv_socket_buffer_size": SOCKET_BUFFER,
        "send_socket_buffer_size": SOCKET_BUFFER,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.error_notification | lt.alert.category_t.peer_notification,
        "user_agent": "interop-test",
    }
    settings.update(extra or {})
    return lt.session(settings)


def limit_download(session, bytes_per_second: int):
    """libtorrent exempts loopback peers from rate limits (the "local" peer class): put
    every address in the global class, then limit it."""
    peer_filter = lt.ip_filter()
    peer_filter.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    session.set_peer_class_filter(peer_filter)
    session.apply_settings({"download_rate_limit": bytes_per_second})


def add_download(session, torrent: Path, save_path: Path):
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(torrent))
    params.save_path = str(save_path)
    params.flags &= ~lt.torrent_flags.auto_managed
    params.flags &= ~lt.torrent_flags.paused
    return session.add_torrent(params)


def drain_alerts(session) -> list:
    return [f"{type(alert).__name__}: {alert.message()}" for alert in session.pop_alerts()]


def wait_for_download(session, handle, peer: tuple, timeout: float, on_poll=None) -> dict:
    """Connects the torrent to `peer` (host, port) and waits until it is complete.
    Reconnects if the peer list empties (no tracker would hand the peer back).
    Returns {'seconds': ..., 'alerts': [...]}; raises AssertionError on timeout."""
    started = time.monotonic()
    deadline = started + timeout
    alerts = []
    last_connect = 0.0
    while True:
        status = handle.status()
        if status.is_seeding or status.state == lt.torrent_status.seeding:
            alerts += drain_alerts(session)
            return {"seconds": time.monotonic() - started, "alerts": alerts}
        now = time.monotonic()
        ready = status.state in (lt.torrent_status.downloading, lt.torrent_status.finished)
        if ready and status.num_peers == 0 and now - last_connect > 2:
            handle.connect_peer(peer)
            last_connect = now
        alerts += drain_alerts(session)
        if on_poll:
            on_poll()
        if now > deadline:
            raise AssertionError(
                f"download not complete within {timeout} s: state {status.state}, progress {status.progress:.3f}, "
                f"peers {status.num_peers}, rate {status.download_rate}; alerts:\n" + "\n".join(alerts[-30:]))
        time.sleep(0.05)


# --------------------------------------------------------------------------- tracker


class TinyTracker:
    """An HTTP tracker on loopback that answers every announce with a fixed peer list
    (compact). For Transmission and aria2, which cannot be handed a peer directly."""

    def __init__(self, peers, address="127.0.0.1", port=0, echo=False):
        self.peers = list(peers)
        self.announces = []
        tracker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                tracker.announces.append({key: values[0] for key, values in query.items()})
                if echo:
                    print(f"announce {self.path}", flush=True)
                compact = b"".join(socket.inet_aton(host) + struct.pack(">H", port) for host, port in tracker.peers)
                body = bencode({"interval": 30, "min interval": 5, "complete": 1, "incomplete": 1, "peers": compact})
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{address}:{self.server.server_address[1]}/announce"
        self.thread = threading.Thread(target=self.server.serve_forever, name="tiny-tracker", daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------- raw peer wire

FAST_RESERVED = bytes([0, 0, 0, 0, 0, 0x10, 0, 0x04])


def handshake_bytes(info_hash: bytes, peer_id: bytes = None, reserved: bytes = FAST_RESERVED) -> bytes:
    peer_id = peer_id or b"-PY0001-" + os.urandom(12)
    return PROTOCOL + reserved + info_hash + peer_id


def message(message_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), message_id) + payload


def request(piece: int, offset: int, length: int) -> bytes:
    return message(6, struct.pack(">III", piece, offset, length))


INTERESTED = message(2)


def raw_connect(port: int, source: str = "127.0.0.1", host: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect((host, port))
    return sock


class RawPeer:
    """A hand-driven peer: handshake, read messages, send anything."""

    def __init__(self, port: int, source: str = "127.0.0.1"):
        self.sock = raw_connect(port, source)
        self.buffer = b""

    def close(self):
        self.sock.close()

    def handshake(self, info_hash: bytes, reserved: bytes = FAST_RESERVED) -> bytes:
        """Sends ours and returns the seeder's 68-byte handshake."""
        self.sock.sendall(handshake_bytes(info_hash, reserved=reserved))
        reply = self.read_exact(68)
        assert reply[:20] == PROTOCOL and reply[28:48] == info_hash, f"bad handshake reply {reply!r}"
        return reply

    def read_exact(self, count: int, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buffer) < count:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(256 * KiB)
            if not chunk:
                raise ConnectionError(f"closed after {len(self.buffer)} of {count} bytes")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def read_message(self, timeout: float = 10):
        """(id, payload), or (None, b'') for a keepalive."""
        length = struct.unpack(">I", self.read_exact(4, timeout))[0]
        body = self.read_exact(length, timeout)
        return (body[0], body[1:]) if body else (None, b"")

    def wait_for(self, message_id: int, timeout: float = 10):
        deadline = time.monotonic() + timeout
        while True:
            got, payload = self.read_message(max(0.01, deadline - time.monotonic()))
            if got == message_id:
                return payload

    def send(self, data: bytes):
        self.sock.sendall(data)


def closed_within(sock: socket.socket, timeout: float) -> float:
    """Reads and discards until EOF or reset; returns the seconds it took, or raises
    AssertionError if the connection is still open after `timeout`."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"connection still open after {timeout} s")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(256 * KiB)
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
        except socket.timeout:
            continue
        if not chunk:
            return time.monotonic() - started


# --------------------------------------------------------------------------- /proc


def proc_status(pid: int, key: str) -> int:
    """A kB field of /proc/PID/status (VmRSS, VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * KiB
    raise KeyError(key)


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- network namespace


class NetNamespace:
    """A private network namespace holding only `lo`, with extra addresses on it, kept
    alive by a `sleep` started through unshare (stopped by its PID in close()).

    Transmission 3.00 treats 127.0.0.0/8 and ::1 as martian and never dials a peer
    there, so a test that needs Transmission to reach the seeder gives both 10.x
    addresses inside a namespace of its own: nothing leaves it."""

    def __init__(self, addresses):
        import subprocess
        self.process = subprocess.Popen(["unshare", "--net", "--", "sleep", "3600"], stdin=subprocess.DEVNULL)
        self.pid = self.process.pid
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self.pid}/ns/net") == own:
            assert time.monotonic() < deadline, "unshare did not create a namespace"
            time.sleep(0.01)
        self.prefix = ["nsenter", f"--net=/proc/{self.pid}/ns/net", "--"]
        subprocess.run([*self.prefix, "ip", "link", "set", "lo", "up"], check=True)
        for address in addresses:
            subprocess.run([*self.prefix, "ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)

    def close(self):
        if self.process.poll() is None:
            os.kill(self.pid, 15)
            self.process.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    # python3 peers.py tracker ADDRESS PORT PEER_HOST:PEER_PORT ... : runs a TinyTracker
    # in the foreground (inside a namespace) and prints one line per announce.
    import sys

    assert sys.argv[1] == "tracker"
    peers = [(item.rsplit(":", 1)[0], int(item.rsplit(":", 1)[1])) for item in sys.argv[4:]]
    tracker = TinyTracker(peers, address=sys.argv[2], port=int(sys.argv[3]), echo=True)
    print(f"tracker {tracker.url}", flush=True)
    try:
        tracker.thread.join()
    except KeyboardInterrupt:
        pass
