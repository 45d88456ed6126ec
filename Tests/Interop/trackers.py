"""Trackers for the interop tests: Debian's opentracker (HTTP and UDP on one port,
whitelist-only build) run as a real process, and a small HTTP server for the
misbehaving trackers that no real program plays (down, HTTP 500, garbage, refusal)."""

import http.server
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from conftest import bdecode, free_port


class OpenTracker:
    """opentracker on 127.0.0.1 with the given info-hashes whitelisted (it chroots into
    `directory`, so the whitelist path in its config is relative to that)."""

    def __init__(self, directory: Path, info_hashes, port: int = None):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "whitelist.txt").write_text("".join(f"{h}\n" for h in info_hashes))
        config = directory / "opentracker.conf"
        config.write_text("access.whitelist /whitelist.txt\n")
        self.port = port or free_port()
        self.log_path = directory / "opentracker.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["opentracker", "-i", "127.0.0.1", "-p", str(self.port), "-P", str(self.port),
                 "-f", str(config), "-d", str(directory)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                assert self.process.poll() is None, f"opentracker exited: {self.log_path.read_text()}"
                assert time.monotonic() < deadline, "opentracker did not start listening"
                time.sleep(0.05)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/announce"

    @property
    def udp_url(self) -> str:
        return f"udp://127.0.0.1:{self.port}/announce"

    def peers(self, info_hash_hex: str) -> set:
        """The (ip, port) pairs the tracker lists for a torrent, asked as a leecher that
        then leaves again so that it does not stay listed itself."""
        query = {"info_hash": bytes.fromhex(info_hash_hex), "peer_id": b"-PY0001-observer0000",
                 "port": 1, "uploaded": 0, "downloaded": 0, "left": 1, "compact": 1, "numwant": 200}
        reply = bdecode(urllib.request.urlopen(self._url(query, "started"), timeout=5).read())
        urllib.request.urlopen(self._url(query, "stopped"), timeout=5).read()
        compact = reply.get(b"peers", b"")
        found = set()
        for index in range(0, len(compact), 6):
            ip = socket.inet_ntoa(compact[index:index + 4])
            port = int.from_bytes(compact[index + 4:index + 6], "big")
            if port != 1:
                found.add((ip, port))
        return found

    def _url(self, query, event):
        # quote, not urlencode's default quote_plus: opentracker reads '+' as a plus, so
        # a hash with a 0x20 byte would name another torrent.
        return self.http_url + "?" + urllib.parse.urlencode({**query, "event": event}, quote_via=urllib.parse.quote)

    def stop(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


class ScriptedTracker:
    """An HTTP server on loopback whose answer per path is scripted: each request is
    recorded (path, query, monotonic time) and answered with (status, body), or with
    what a callable given the query returns. With `tls` (an ssl.SSLContext) it speaks
    HTTPS."""

    def __init__(self, answers: dict, tls=None):
        self.answers = answers
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path, _, query = self.path.partition("?")
                outer.requests.append((path, urllib.parse.parse_qs(query), time.monotonic()))
                answer = outer.answers.get(path, (404, b"no such tracker"))
                status, body = answer(urllib.parse.parse_qs(query)) if callable(answer) else answer
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def times(self, path: str) -> list:
        return [when for requested, _, when in self.requests if requested == path]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def make_certificate_authority(directory: Path, name: str):
    """A CA certificate and a server certificate it signed for 127.0.0.1 and localhost,
    made with the openssl command. Returns (ca.pem, server.pem, server.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / f"{name}-ca.key", directory / f"{name}-ca.pem"
    key, request, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    extensions = directory / f"{name}.ext"
    extensions.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")

    def openssl(*args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_cert,
            "-days", "2", "-subj", f"/CN={name} test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", request, "-subj", "/CN=127.0.0.1")
    openssl("x509", "-req", "-in", request, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", extensions)
    return ca_cert, cert, key
