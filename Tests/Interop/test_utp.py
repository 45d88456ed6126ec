"""uTP (BEP 29) against real implementations: libtorrent downloads over uTP with TCP
disabled, Transmission 3.00 (its old libutp) downloads from a seeder that may only dial
over uTP, and a libtorrent uTP download completes intact while hostile datagrams hit the
same UDP port. The transport is proved each time (libtorrent's peer flag, the seeder's
log and status), never assumed."""

import json
import os
import random
import re
import socket
import struct
import threading
import time
import urllib.request
from pathlib import Path

from conftest import KiB, MiB, free_port, write_config, write_tree
from peers import (NetNamespace, TinyTracker, add_download, handshake_bytes, info_hash_bytes, lt_session, make_torrent, proc_status,
                   wait_for_download)
from test_seed_tcp import Program, assert_same, serve, wait_for_file

UTP_SOCKET_FLAG = 1 << 17  # peer_info.utp_socket, missing from the Python binding
UTP_ONLY = {"enable_outgoing_tcp": False, "enable_incoming_tcp": False,
            "enable_outgoing_utp": True, "enable_incoming_utp": True}


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        return json.loads(response.read())


def utp_download(start_seeder, tmp_path, size: int, client_ip: str, timeout: float, on_poll=None, on_started=None):
    """Serves one file, lets a TCP-less libtorrent client download it over uTP and
    returns (server, status port, seconds, uTP peer flags seen). `on_started(server,
    port, info_hash)` runs once the seeder serves; `on_poll()` while the download runs."""
    status_port = free_port()
    server, port, torrents = serve(start_seeder, tmp_path, {"u.bin": {"u.bin": size}}, 256 * KiB,
                                   settings={"status": {"listen": f'"127.0.0.1:{status_port}"'},
                                             "log": {"level": '"debug"'}})
    if on_started:
        on_started(server, port, info_hash_bytes(torrents["u.bin"]))
    session = lt_session(client_ip, extra=UTP_ONLY)
    seen = {"utp": 0, "tcp": 0, "status_utp_peers": 0}

    def poll():
        peers = handle.get_peer_info()
        for peer in peers:
            seen["utp" if peer.flags & UTP_SOCKET_FLAG else "tcp"] += 1
        if peers:
            seen["status_utp_peers"] = max(seen["status_utp_peers"], status(status_port)["peers"]["utp"])
        if on_poll:
            on_poll()

    try:
        handle = add_download(session, torrents["u.bin"], tmp_path / "dl")
        result = wait_for_download(session, handle, ("127.0.0.1", port), timeout=timeout, on_poll=poll)
    finally:
        del session
    assert_same(tmp_path / "dl" / "u.bin", tmp_path / "srv" / "data" / "u.bin")
    return server, status_port, result["seconds"], seen


def test_libtorrent_downloads_64mib_over_utp(start_seeder, tmp_path):
    server, status_port, seconds, seen = utp_download(start_seeder, tmp_path, 64 * MiB, "127.0.0.31", timeout=90)
    print(f"64 MiB over uTP in {seconds:.1f} s ({64 / seconds:.1f} MiB/s)")
    assert seen["utp"] > 0 and seen["tcp"] == 0, seen
    assert seen["status_utp_peers"] == 1, seen
    report = status(status_port)
    assert report["uploaded_by_transport"]["utp"] >= 64 * MiB, report["uploaded_by_transport"]
    assert report["uploaded_by_transport"]["tcp"] == 0, report["uploaded_by_transport"]
    assert report["counters"]["utp_retransmits"] >= 0
    server.assert_running()
    assert server.stop() == 0
    # The closing connection's counters are logged (debug).
    assert re.search(r"uTP connection closed .*cwnd=\d+.*packets_sent=[1-9]\d*.*peer=127\.0\.0\.31:.*retransmits=\d+.*"
                     r"rtt_ms=[\d.]+.*uploaded=67108864", server.log()), server.log()[-3000:]


def test_transmission_downloads_over_utp_from_a_seeder_that_dials_only_utp(start_seeder, tmp_path):
    """Transmission never dials 127.0.0.0/8, and a tracker handing it the seeder would let
    it use TCP. So both live in a private namespace, the tracker hands everyone only
    Transmission's address, and the seeder (outgoing = "utp_only") dials it: the only
    connection there can be is our uTP one."""
    seeder_ip, client_ip, seeder_port, client_port, tracker_port = "10.77.1.1", "10.77.1.2", 6881, 51413, 6969
    with NetNamespace([seeder_ip, client_ip]) as namespace:
        tracker = Program([*namespace.prefix, "/usr/bin/python3", str(Path(__file__).with_name("peers.py")), "tracker",
                           seeder_ip, str(tracker_port), f"{client_ip}:{client_port}"], tmp_path / "tracker.log")
        client = None
        try:
            url = f"http://{seeder_ip}:{tracker_port}/announce"
            config_dir = tmp_path / "transmission"
            config_dir.mkdir()
            download = tmp_path / "dl-tr"
            download.mkdir()
            (config_dir / "settings.json").write_text(json.dumps({
                "encryption": 0, "utp-enabled": True, "dht-enabled": False, "lpd-enabled": False,
                "pex-enabled": False, "port-forwarding-enabled": False, "bind-address-ipv4": client_ip,
                "peer-port": client_port, "rename-partial-files": False, "download-dir": str(download),
                "message-level": 3,
            }))
            # Transmission first, so that it listens (and has announced) when the seeder dials.
            torrent_name = "tu.bin"
            data = tmp_path / "srv" / "data"
            write_tree(data, {torrent_name: 12 * MiB + 5}, seed=7)
            torrent = make_torrent(data / torrent_name, tmp_path / "tu.torrent", 256 * KiB, url)
            deadline = time.monotonic() + 10
            while "tracker " not in tracker.output():
                assert time.monotonic() < deadline, tracker.output()
                time.sleep(0.05)
            client = Program([*namespace.prefix, "transmission-cli", "-g", str(config_dir), "-w", str(download), "-et",
                              str(torrent)], tmp_path / "transmission.log")
            deadline = time.monotonic() + 20
            while "announce /announce?" not in tracker.output():
                assert time.monotonic() < deadline, "transmission never announced:\n" + client.output()[-2000:]
                time.sleep(0.1)
            config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", port=seeder_port,
                                  settings={"network": {"bind_ipv4": f'"{seeder_ip}"', "bind_ipv6": '""',
                                                        "outgoing": '"utp_only"'},
                                            "trackers": {"announce_jitter": "0"}, "log": {"level": '"debug"'}})
            server = start_seeder("--config", config, torrent, prefix=namespace.prefix)
            wait_for_file(download / torrent_name, data / torrent_name, 90, client)
            # Stopping the seeder closes the connection on our side, which logs its uTP counters.
            server.assert_running()
            assert server.stop() == 0
            log = server.log()
            assert re.search(rf"peer connected .*direction=out.*peer={re.escape(client_ip)}:{client_port}", log), log[-3000:]
            closed = rf"uTP connection closed .*peer={re.escape(client_ip)}:{client_port}.*uploaded=(\d+)"
            assert sum(int(m) for m in re.findall(closed, log)) >= 12 * MiB, log[-3000:]
        finally:
            if client is not None:
                client.stop()
            tracker.stop()


def test_prefer_utp_falls_back_to_tcp_for_a_peer_without_utp(start_seeder, tmp_path):
    """The default `outgoing = "prefer_utp"` dials uTP first; a leecher with uTP off never
    answers, so after the uTP connect timeout the seeder dials TCP and serves it."""
    session = lt_session("127.0.0.33")  # TCP only
    try:
        with TinyTracker([("127.0.0.33", session.listen_port())]) as tracker:
            server, port, torrents = serve(start_seeder, tmp_path, {"fb.bin": {"fb.bin": 3 * MiB + 1}}, 256 * KiB,
                                           tracker=tracker.url,
                                           settings={"trackers": {"announce_jitter": "0"}, "log": {"level": '"debug"'}})
            handle = add_download(session, torrents["fb.bin"], tmp_path / "dl")
            deadline = time.monotonic() + 30
            while not handle.status().is_seeding:
                assert time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.1)
    finally:
        del session
    assert_same(tmp_path / "dl" / "fb.bin", tmp_path / "srv" / "data" / "fb.bin")
    log = server.log()
    assert re.search(r"peer 127\.0\.0\.33:\d+: .*uTP.*; trying tcp", log), log[-3000:]
    assert re.search(r"peer connected .*direction=out.*peer=127\.0\.0\.33:", log), log[-3000:]
    assert server.stop() == 0


# --------------------------------------------------------------------------- hostile datagrams


def header(kind: int, connection_id: int, seq: int, ack: int, extension: int = 0, window: int = 1 << 20) -> bytes:
    now = int(time.monotonic() * 1e6) & 0xFFFFFFFF or 1
    return struct.pack(">BBHIIIHH", kind << 4 | 1, extension, connection_id, now, 0, window, seq, ack)


ST_DATA, ST_FIN, ST_STATE, ST_RESET, ST_SYN = 0, 1, 2, 3, 4


class HostileUTP:
    """Raw UDP from its own loopback address: a real uTP handshake (so that the packets
    after it reach an established connection), then everything malformed."""

    def __init__(self, port: int, source: str):
        self.target = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
        self.sent = 0

    def send(self, data: bytes):
        self.sock.sendto(data, self.target)
        self.sent += 1

    def connect(self, info_hash: bytes):
        """SYN, SYN-ACK, then DATA with the BitTorrent handshake: an accepted connection.
        Returns (send id, our next seq, the seeder's last seq)."""
        recv_id = random.randrange(1, 0xFFFE)
        self.send(header(ST_SYN, recv_id, 1, 0))
        self.sock.settimeout(5)
        while True:
            reply, _ = self.sock.recvfrom(65536)
            if reply[0] >> 4 == ST_STATE and struct.unpack(">H", reply[2:4])[0] == recv_id:
                break
        # The SYN-ACK's seq_nr is the seeder's ISN, which its first DATA uses as well:
        # the initiator acks ISN - 1 (protocol-notes.md).
        their_seq = (struct.unpack(">H", reply[16:18])[0] - 1) & 0xFFFF
        send_id = (recv_id + 1) & 0xFFFF
        self.send(header(ST_DATA, send_id, 2, their_seq) + handshake_bytes(info_hash))
        return send_id, 3, their_seq

    def close(self):
        self.sock.close()


def hostile_burst(port: int, info_hash: bytes, stop: threading.Event, errors: list, counts: dict):
    rng = random.Random(29)
    try:
        hostile = HostileUTP(port, "127.0.0.41")
        send_id, seq, their_seq = hostile.connect(info_hash)
        # On the established connection: a selective ack claiming 1,000 packets, ack_nr
        # far outside the window, overrunning and truncated extensions, bogus FIN.
        sack = bytes([0, 128]) + b"\xff" * 128
        hostile.send(header(ST_STATE, send_id, seq, their_seq, extension=1) + sack)
        hostile.send(header(ST_STATE, send_id, seq, (their_seq + 30000) & 0xFFFF))
        hostile.send(header(ST_STATE, send_id, seq, (their_seq - 30000) & 0xFFFF, extension=1) + sack)
        hostile.send(header(ST_STATE, send_id, seq, their_seq, extension=1) + bytes([0, 200]) + b"\x01\x02")
        hostile.send(header(ST_DATA, send_id, seq, their_seq, extension=2) + bytes([1, 8]) + b"\0" * 4)
        hostile.send(header(ST_DATA, send_id, (seq + 40000) & 0xFFFF, their_seq) + b"x" * 1000)
        hostile.send(header(ST_FIN, send_id, (seq + 20000) & 0xFFFF, their_seq))
        # RESET for connection ids that are not ours (nor anybody's from this address).
        for _ in range(200):
            hostile.send(header(ST_RESET, rng.randrange(65536), rng.randrange(65536), rng.randrange(65536)))
        # Until the download is done (bounded, so a stuck test still ends).
        while not stop.is_set() and counts["rounds"] < 50:
            counts["rounds"] += 1
            # Random bytes, uTP-looking first bytes with garbage after, truncated headers.
            for _ in range(2000):
                hostile.send(os.urandom(rng.randrange(1, 1500)))
                first = rng.choice([0x01, 0x11, 0x21, 0x31, 0x41])
                hostile.send(bytes([first]) + os.urandom(rng.randrange(0, 19)))
                hostile.send(bytes([first, rng.randrange(256)]) + os.urandom(rng.randrange(18, 200)))
            # 20,000 SYNs, each from a different connection id.
            flood = HostileUTP(port, "127.0.0.42")
            for connection_id in range(20000):
                flood.send(header(ST_SYN, connection_id, rng.randrange(65536), 0))
            flood.close()
        hostile.close()
    except Exception as error:  # reported by the test thread
        errors.append(repr(error))


def test_hostile_datagrams_during_a_utp_download(start_seeder, tmp_path):
    """Garbage, malformed and forged datagrams from other addresses, and a connection of
    our own that is then fed impossible acks, all while libtorrent downloads over uTP:
    the download completes byte for byte and memory stays bounded."""
    stop = threading.Event()
    errors = []
    counts = {"rounds": 0}
    state = {"rss": []}

    def on_started(server, port, info_hash):
        state["server"] = server
        state["rss_start"] = proc_status(server.pid, "VmRSS")
        state["thread"] = threading.Thread(target=hostile_burst, args=(port, info_hash, stop, errors, counts))
        state["thread"].start()

    def on_poll():
        state["rss"].append(proc_status(state["server"].pid, "VmRSS"))

    try:
        server, status_port, seconds, seen = utp_download(start_seeder, tmp_path, 64 * MiB, "127.0.0.32", timeout=100,
                                                         on_poll=on_poll, on_started=on_started)
        rounds_during_download = counts["rounds"]
    finally:
        stop.set()
        if "thread" in state:
            state["thread"].join(60)
    assert not errors, errors
    assert rounds_during_download >= 1, "the hostile sender did not get going during the download"
    assert seen["utp"] > 0 and seen["tcp"] == 0, seen
    peak = max(state["rss"])
    print(f"64 MiB over uTP under fire in {seconds:.1f} s ({rounds_during_download} hostile rounds); "
          f"RSS {state['rss_start'] >> 20} -> peak {peak >> 20} MiB")
    assert peak - state["rss_start"] < 96 * MiB, (state["rss_start"], peak)
    server.assert_running()
    # Our own hostile connection stays. Under the SYN flood our ISNs are cookies, and a
    # forged DATA matches one about once in 8,192: such a connection is refused at its
    # first byte unless it carried no payload, when it waits out the 10 s handshake
    # timeout like any silent peer.
    deadline = time.monotonic() + 15
    report = status(status_port)
    while report["peers"]["utp"] > 1 and time.monotonic() < deadline:
        time.sleep(0.5)
        report = status(status_port)
    assert report["peers"]["utp"] <= 1, report["peers"]
    # The attack shows in the socket counters an operator sees (UDP may drop some of it).
    socket_counters = report["counters"]["utp_socket"]
    assert socket_counters["malformed"] > 0 and socket_counters["stray"] > 0, socket_counters
    assert socket_counters["syns_received"] > 1000 and socket_counters["half_open_evicted"] > 0, socket_counters
    assert server.stop() == 0
