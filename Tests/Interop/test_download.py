"""`seeder run` downloads what its data directory misses, verifies every piece, then
seeds: from a libtorrent seed it learns of through opentracker; from libtorrent,
Transmission and another seeder at once; next to a peer that sends corrupt blocks (it
is banned); across a kill -9 (resume data spares the verified pieces a re-hash); under
a download limit; and into a full disk (the torrent goes to the error state, the others
keep seeding)."""

import json
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import libtorrent as lt

from conftest import KiB, MiB, free_port, seeding_line, write_config, write_tree
from peers import (NetNamespace, PROTOCOL, TinyTracker, add_download, info_hash_bytes, lt_session, make_torrent,
                   wait_for_download)
from test_http_trackers import same_tree, wait_until_seeding
from trackers import OpenTracker

# Outgoing TCP only: these tests are about downloading, not the transport choice.
TCP = {"network": {"utp": "false", "outgoing": '"tcp_only"'}, "trackers": {"announce_jitter": "0"}}


def settings(*extra: dict) -> dict:
    merged = {section: dict(values) for section, values in TCP.items()}
    for more in extra:
        for section, values in more.items():
            merged.setdefault(section, {}).update(values)
    return merged


def lt_seed(address: str, torrent: Path, data: Path, timeout: float = 60):
    """A libtorrent session seeding `torrent` from `data` on its own address."""
    session = lt_session(address)
    handle = add_download(session, torrent, data)
    wait_until_seeding([handle], timeout)
    return session, handle


def wait_listed(tracker: OpenTracker, info_hash: str, address: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while not any(ip == address for ip, _ in tracker.peers(info_hash)):
        assert time.monotonic() < deadline, f"{address} never announced to the tracker"
        time.sleep(0.2)


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as reply:
        return json.loads(reply.read())


def test_downloads_64mib_from_libtorrent_then_seeds_it(seeder, start_seeder, tmp_path):
    source = write_tree(tmp_path / "source", {"big.bin": 64 * MiB})
    tracker = OpenTracker(tmp_path / "opentracker", [])
    torrent = make_torrent(source / "big.bin", tmp_path / "big.torrent", 256 * KiB, tracker.http_url)
    info_hash = seeder.info_hash(torrent)
    tracker.stop()
    tracker = OpenTracker(tmp_path / "opentracker", [info_hash], port=tracker.port)
    seed = leecher = None
    try:
        seed, _ = lt_seed("127.0.0.11", torrent, source)
        wait_listed(tracker, info_hash, "127.0.0.11")
        status_port = free_port()
        config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv",
                              settings=settings({"status": {"listen": f'"127.0.0.1:{status_port}"'}}))
        data = tmp_path / "srv" / "data"
        data.mkdir(parents=True)
        started = time.monotonic()
        server = start_seeder("--config", config, "--data", data, torrent)
        server.wait_for(seeding_line("big.bin"), timeout=30)
        server.wait_for(r"downloading big\.bin", timeout=10)
        server.wait_for(r"completed big\.bin", timeout=90)
        print(f"64 MiB downloaded in {time.monotonic() - started:.1f} s")
        assert same_tree(source / "big.bin", data / "big.bin")
        state = status(status_port)
        torrent_state = state["torrents"][0]
        assert torrent_state["state"] == "seeding", torrent_state
        assert torrent_state["transfer"]["downloaded"] >= 64 * MiB
        # `completed` waits for the tracker's min interval (TorrentAnnouncer): not asserted here.

        # The libtorrent seed leaves; a new leecher can only get the data from us.
        del seed
        seed = None
        leecher = lt_session("127.0.0.12")
        handle = add_download(leecher, torrent, tmp_path / "leecher")
        wait_for_download(leecher, handle, ("127.0.0.1", int(re.search(r"listen_port = (\d+)", config.read_text()).group(1))),
                          timeout=60)
        assert same_tree(source / "big.bin", tmp_path / "leecher" / "big.bin")
        assert status(status_port)["transfer"]["uploaded"] >= 64 * MiB
        server.assert_running()
        assert server.stop() == 0
    finally:
        seed = leecher = None
        tracker.stop()


def limit_upload(session, bytes_per_second: int):
    """libtorrent exempts loopback peers from its limits: map every address to the
    global peer class first (as peers.limit_download does for downloads)."""
    everyone = lt.ip_filter()
    everyone.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    session.set_peer_class_filter(everyone)
    session.apply_settings({"upload_rate_limit": bytes_per_second})


class CorruptPeer:
    """A hostile seed: dials the seeder from its own address (again after every
    disconnect), claims every piece, unchokes, and answers each request with bytes that
    are wrong. Counts the blocks it served and the connections the seeder refused."""

    def __init__(self, address: str, port: int, info_hash: bytes, piece_count: int):
        self.address, self.port, self.info_hash, self.piece_count = address, port, info_hash, piece_count
        self.blocks_served = 0
        self.connections = 0
        self.refused = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping.is_set():
            try:
                self.session()
            except OSError:
                pass
            self.stopping.wait(0.3)

    def session(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=(self.address, 0)) as sock:
            self.connections += 1
            sock.sendall(PROTOCOL + bytes(8) + self.info_hash + b"-XX0001-corruptpeer0")
            reply = self.read(sock, 68)
            if reply is None:
                self.refused += 1
                return
            bitfield = bytearray((self.piece_count + 7) // 8)
            for piece in range(self.piece_count):
                bitfield[piece // 8] |= 0x80 >> (piece % 8)
            sock.sendall(struct.pack(">IB", 1 + len(bitfield), 5) + bytes(bitfield) + struct.pack(">IB", 1, 1))
            while not self.stopping.is_set():
                header = self.read(sock, 4)
                if header is None:
                    return
                length = struct.unpack(">I", header)[0]
                body = self.read(sock, length) if length else b""
                if body is None:
                    return
                if body[:1] == b"\x06":
                    piece, offset, size = struct.unpack(">III", body[1:13])
                    sock.sendall(struct.pack(">IBII", 9 + size, 7, piece, offset) + b"\xa5" * size)
                    self.blocks_served += 1

    def read(self, sock, count):
        data = b""
        while len(data) < count:
            try:
                chunk = sock.recv(count - len(data))
            except socket.timeout:
                if self.stopping.is_set():
                    return None
                continue
            if not chunk:
                return None
            data += chunk
        return data

    def stop(self):
        self.stopping.set()
        self.thread.join(10)


def test_corrupt_blocks_fail_the_hash_and_their_sender_is_banned(seeder, start_seeder, tmp_path):
    source = write_tree(tmp_path / "source", {"mixed.bin": 16 * MiB})
    torrent = make_torrent(source / "mixed.bin", tmp_path / "mixed.torrent", 256 * KiB)
    seed = hostile = None
    try:
        # The good seed is slow, so the liar gets its share of requests.
        seed, _ = lt_seed("127.0.0.11", torrent, source)
        limit_upload(seed, 2 * MiB)
        seed_port = seed.listen_port()
        port = free_port()
        with TinyTracker([("127.0.0.11", seed_port)]) as tracker:
            lt_torrent = make_torrent(source / "mixed.bin", tmp_path / "tracked.torrent", 256 * KiB, tracker.url)
            config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", port=port,
                                  settings=settings({"limits": {"invalid_threshold": "3"},
                                                     "storage": {"preallocate": "true"}}))
            data = tmp_path / "srv" / "data"
            data.mkdir(parents=True)
            server = start_seeder("--config", config, "--data", data, lt_torrent)
            server.wait_for(r"downloading mixed\.bin.*preallocate=true", timeout=30)
            hostile = CorruptPeer("127.0.0.13", port, info_hash_bytes(lt_torrent), lt.torrent_info(str(lt_torrent)).num_pieces())
            server.wait_for(r"piece \d+ of mixed\.bin failed its hash check", timeout=30)
            server.wait_for(r"banned peer 127\.0\.0\.13", timeout=60)
            server.wait_for(r"completed mixed\.bin", timeout=60)
            assert same_tree(source / "mixed.bin", data / "mixed.bin")
            # Preallocated: the file had its full length in blocks, not a sparse tail.
            assert (data / "mixed.bin").stat().st_blocks * 512 >= 16 * MiB
            assert hostile.blocks_served > 0
            # Every later attempt of the banned address is turned away at once.
            deadline = time.monotonic() + 10
            while hostile.refused == 0:
                assert time.monotonic() < deadline, "the banned peer was never refused"
                time.sleep(0.1)
            server.assert_running()
            assert server.stop() == 0
    finally:
        if hostile is not None:
            hostile.stop()
        seed = None


def test_kill_9_mid_download_resumes_without_rehashing(seeder, start_seeder, tmp_path):
    source = write_tree(tmp_path / "source", {"resume.bin": 32 * MiB})
    seed = None
    try:
        seed, _ = lt_seed("127.0.0.11", make_torrent(source / "resume.bin", tmp_path / "plain.torrent", 256 * KiB), source)
        limit_upload(seed, 4 * MiB)
        with TinyTracker([("127.0.0.11", seed.listen_port())]) as tracker:
            torrent = make_torrent(source / "resume.bin", tmp_path / "resume.torrent", 256 * KiB, tracker.url)
            status_port = free_port()
            config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", settings=settings({
                "storage": {"resume_interval": "1"}, "status": {"listen": f'"127.0.0.1:{status_port}"'}}))
            data = tmp_path / "srv" / "data"
            data.mkdir(parents=True)
            server = start_seeder("--config", config, "--data", data, torrent)
            server.wait_for(r"downloading resume\.bin", timeout=30)
            deadline = time.monotonic() + 30
            while status(status_port)["torrents"][0]["pieces_have"] < 40:
                assert time.monotonic() < deadline, "the download made no progress"
                time.sleep(0.2)
            time.sleep(1.5)  # one resume save at least
            have_before = status(status_port)["torrents"][0]["pieces_have"]
            assert have_before < 128, "the download finished before the kill"
            server.stop(number=9)

            limit_upload(seed, 0)
            restarted = start_seeder("--config", config, "--data", data, torrent)
            line = restarted.wait_for(seeding_line("resume.bin") + r".*hashed_pieces=(\d+)", timeout=30)
            held, total, _, hashed = map(int, line.groups())
            print(f"killed at {have_before} pieces; restarted with {held} of {total}, {hashed} hashed")
            assert held >= 30, line.group(0)
            assert hashed < 10, line.group(0)
            restarted.wait_for(r"completed resume\.bin", timeout=60)
            assert same_tree(source / "resume.bin", data / "resume.bin")
            assert restarted.stop() == 0
    finally:
        seed = None


def test_download_limit_holds_the_rate(seeder, start_seeder, tmp_path):
    """`[limits] download_limit`: the server stops reading its sockets when the limit's
    tokens run out, so 8 MiB at 2 MiB/s takes about 4 s however fast the seed is."""
    source = write_tree(tmp_path / "source", {"slow.bin": 8 * MiB})
    seed = None
    try:
        seed, _ = lt_seed("127.0.0.11", make_torrent(source / "slow.bin", tmp_path / "plain.torrent", 256 * KiB), source)
        with TinyTracker([("127.0.0.11", seed.listen_port())]) as tracker:
            torrent = make_torrent(source / "slow.bin", tmp_path / "slow.torrent", 256 * KiB, tracker.url)
            config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv",
                                  settings=settings({"limits": {"download_limit": '"2MiB/s"'}}))
            data = tmp_path / "srv" / "data"
            data.mkdir(parents=True)
            server = start_seeder("--config", config, "--data", data, torrent)
            server.wait_for(r"downloading slow\.bin", timeout=30)
            started = time.monotonic()
            server.wait_for(r"completed slow\.bin", timeout=30)
            seconds = time.monotonic() - started
            print(f"8 MiB at a 2 MiB/s limit in {seconds:.1f} s")
            # The first burst and the connection set-up blur the edges: 2.8 s is 2.9 MiB/s.
            assert 2.8 <= seconds <= 8, seconds
            assert same_tree(source / "slow.bin", data / "slow.bin")
            assert server.stop() == 0
    finally:
        seed = None


def test_full_disk_puts_the_torrent_in_error_and_others_keep_seeding(seeder, start_seeder, tmp_path):
    source = write_tree(tmp_path / "source", {"toobig.bin": 16 * MiB})
    seeded = write_tree(tmp_path / "seeded", {"kept.bin": 4 * MiB}, seed=7)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    seed = leecher = None
    try:
        seed, _ = lt_seed("127.0.0.11", make_torrent(source / "toobig.bin", tmp_path / "plain.torrent", 256 * KiB), source)
        with TinyTracker([("127.0.0.11", seed.listen_port())]) as tracker:
            torrent = make_torrent(source / "toobig.bin", tmp_path / "toobig.torrent", 256 * KiB, tracker.url)
            kept = make_torrent(seeded / "kept.bin", tmp_path / "kept.torrent", 256 * KiB)
            status_port = free_port()
            port = free_port()
            config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", port=port, settings=settings({
                "status": {"listen": f'"127.0.0.1:{status_port}"'},
                "[[torrent]]": {"file": f'"{kept}"', "data_dir": f'"{seeded}"'}}))
            # A 4 MiB tmpfs in a mount namespace of the server's own: the disk fills up.
            mount = ["unshare", "--mount", "--", "sh", "-c", 'mount -t tmpfs -o size=4m tmpfs "$0" && exec "$@"', str(tiny)]
            server = start_seeder("--config", config, "--data", tiny, torrent, prefix=mount)
            server.wait_for(r"download of toobig\.bin stopped: cannot write toobig\.bin: .*No space left on device", timeout=60)
            torrents = {t["name"]: t for t in status(status_port)["torrents"]}
            assert torrents["toobig.bin"]["state"] == "error"
            assert "No space left" in torrents["toobig.bin"]["error"]
            assert torrents["kept.bin"]["state"] == "seeding"

            leecher = lt_session("127.0.0.12")
            handle = add_download(leecher, kept, tmp_path / "leecher")
            wait_for_download(leecher, handle, ("127.0.0.1", port), timeout=60)
            assert same_tree(seeded / "kept.bin", tmp_path / "leecher" / "kept.bin")
            server.assert_running()
            assert server.stop() == 0
    finally:
        seed = leecher = None


# A libtorrent seed as its own process, for a network namespace the test process is not
# in: seeds argv[3] from argv[4] on argv[1]:argv[2], uploads at most argv[5] bytes/s,
# and prints its upload counter every half second.
LT_SEED_SCRIPT = r"""
import sys, time
sys.path.insert(0, sys.argv[6])
import libtorrent as lt
from peers import add_download, lt_session
session = lt_session(sys.argv[1], port=int(sys.argv[2]))
everyone = lt.ip_filter()
everyone.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
session.set_peer_class_filter(everyone)
session.apply_settings({"upload_rate_limit": int(sys.argv[5])})
handle = add_download(session, sys.argv[3], sys.argv[4])
while True:
    status = handle.status()
    print(f"seeding={status.is_seeding} uploaded={status.total_payload_upload}", flush=True)
    time.sleep(0.5)
"""


class Process:
    """A helper process (output to a file), always stopped by its PID."""

    def __init__(self, argv, log: Path):
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self):
        for number, grace in ((15, 5), (9, 5)):
            if self.process.poll() is not None:
                return
            self.process.send_signal(number)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass


def test_downloads_from_libtorrent_transmission_and_another_seeder_at_once(seeder, start_seeder, tmp_path):
    """Transmission never dials or serves martian (loopback) peers usefully, so all five
    programs share a private network namespace: our downloader 10.77.0.1, Transmission
    10.77.0.2, libtorrent 10.77.0.3, a second seeder 10.77.0.4, and a tracker on
    10.77.0.1 that hands out the three seeds. Each seed is rate-limited so that the
    download outlasts Transmission's first rechoke (about 10 s)."""
    us, transmission_ip, libtorrent_ip, other_ip = "10.77.0.1", "10.77.0.2", "10.77.0.3", "10.77.0.4"
    tracker_port, peer_port, transmission_port = 6969, 6881, 51413
    source = write_tree(tmp_path / "source", {"multi.bin": 24 * MiB})
    url = f"http://{us}:{tracker_port}/announce"
    torrent = make_torrent(source / "multi.bin", tmp_path / "multi.torrent", 256 * KiB, url)
    helpers = []
    with NetNamespace([us, transmission_ip, libtorrent_ip, other_ip]) as namespace:
        try:
            helpers.append(Process([*namespace.prefix, "/usr/bin/python3", str(Path(__file__).with_name("peers.py")), "tracker",
                                    us, str(tracker_port), f"{us}:{peer_port}", f"{transmission_ip}:{transmission_port}",
                                    f"{libtorrent_ip}:{peer_port}", f"{other_ip}:{peer_port}"], tmp_path / "tracker.log"))
            libtorrent = Process([*namespace.prefix, "/usr/bin/python3", "-c", LT_SEED_SCRIPT, libtorrent_ip, str(peer_port),
                                  str(torrent), str(source), str(512 * KiB), str(Path(__file__).parent)], tmp_path / "lt.log")
            helpers.append(libtorrent)
            other_config = write_config(tmp_path / "other.toml", base=tmp_path / "other", port=peer_port, settings=settings({
                "network": {"bind_ipv4": f'"{other_ip}"', "bind_ipv6": '""'},
                "limits": {"upload_limit": '"512KiB/s"'}, "status": {"listen": f'"{other_ip}:9180"'}}))
            other = start_seeder("--config", other_config, "--data", source, torrent, prefix=namespace.prefix)
            other.wait_for(seeding_line("multi.bin"), timeout=30)
            deadline = time.monotonic() + 30
            while "seeding=True" not in libtorrent.output():
                assert time.monotonic() < deadline, f"the libtorrent seed never seeded:\n{libtorrent.output()}"
                time.sleep(0.2)

            config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", port=peer_port, settings=settings({
                "network": {"bind_ipv4": f'"{us}"', "bind_ipv6": '""'}, "status": {"listen": f'"{us}:9180"'},
                "log": {"level": '"debug"'}}))
            data = tmp_path / "srv" / "data"
            data.mkdir(parents=True)
            started = time.monotonic()
            server = start_seeder("--config", config, "--data", data, torrent, prefix=namespace.prefix)
            # Transmission starts last and dials us (the tracker lists us too): in this
            # setup it dropped our dials to it at once.
            config_dir = tmp_path / "transmission"
            config_dir.mkdir()
            (config_dir / "settings.json").write_text(json.dumps({
                "encryption": 0, "utp-enabled": False, "dht-enabled": False, "lpd-enabled": False, "pex-enabled": False,
                "port-forwarding-enabled": False, "bind-address-ipv4": transmission_ip, "peer-port": transmission_port,
                "rename-partial-files": False, "download-dir": str(source), "message-level": 3,
                "speed-limit-up": 1000, "speed-limit-up-enabled": True, "ratio-limit-enabled": False,
            }))
            transmission = Process([*namespace.prefix, "transmission-cli", "-g", str(config_dir), "-w", str(source), "-et",
                                    "-u", "1000", str(torrent)], tmp_path / "transmission.log")
            helpers.append(transmission)

            deadline = time.monotonic() + 30
            while "Seeding" not in transmission.output():
                assert time.monotonic() < deadline, f"Transmission never seeded:\n{transmission.output()[-1500:]}"
                time.sleep(0.2)

            server.wait_for(r"completed multi\.bin", timeout=90)
            print(f"24 MiB from three seeds in {time.monotonic() - started:.1f} s")
            assert same_tree(source / "multi.bin", data / "multi.bin")

            # Each source's own upload counter.
            lt_uploaded = int(re.findall(r"uploaded=(\d+)", libtorrent.output())[-1])
            other_status = json.loads(subprocess.run(
                [*namespace.prefix, "/usr/bin/python3", "-c",
                 f"import urllib.request; print(urllib.request.urlopen('http://{other_ip}:9180/status').read().decode())"],
                check=True, capture_output=True, text=True).stdout)
            other_uploaded = other_status["transfer"]["uploaded"]
            time.sleep(1.5)  # transmission-cli prints its ratio once a second
            ratios = re.findall(r"Ratio:?\s*([0-9.]+)", transmission.output()) or re.findall(r"\[\s*([0-9.]+)\]", transmission.output())
            print(f"uploaded: libtorrent {lt_uploaded}, seeder {other_uploaded}, transmission ratio {ratios[-1:]}")
            assert lt_uploaded > 0, libtorrent.output()[-500:]
            assert other_uploaded > 0, other_status
            assert ratios and float(ratios[-1]) > 0, transmission.output()[-1500:]
            server.assert_running()
            assert server.stop() == 0
            assert other.stop() == 0
        finally:
            for helper in reversed(helpers):
                helper.stop()


def test_downloads_64mib_over_utp_from_a_libtorrent_seed_without_tcp(seeder, start_seeder, tmp_path):
    """The seed has TCP turned off and the server dials only uTP: the bytes can only
    have come over our uTP, and /status says so."""
    source = write_tree(tmp_path / "source", {"utp.bin": 64 * MiB})
    seed = None
    try:
        utp_only = {"enable_outgoing_tcp": False, "enable_incoming_tcp": False,
                    "enable_outgoing_utp": True, "enable_incoming_utp": True}
        seed = lt_session("127.0.0.14", extra=utp_only)
        plain = make_torrent(source / "utp.bin", tmp_path / "plain.torrent", 256 * KiB)
        seed_handle = add_download(seed, plain, source)
        wait_until_seeding([seed_handle], 60)
        with TinyTracker([("127.0.0.14", seed.listen_port())]) as tracker:
            torrent = make_torrent(source / "utp.bin", tmp_path / "utp.torrent", 256 * KiB, tracker.url)
            status_port = free_port()
            config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", settings={
                "network": {"utp": "true", "outgoing": '"utp_only"'}, "trackers": {"announce_jitter": "0"},
                "status": {"listen": f'"127.0.0.1:{status_port}"'}})
            data = tmp_path / "srv" / "data"
            data.mkdir(parents=True)
            server = start_seeder("--config", config, "--data", data, torrent)
            server.wait_for(r"downloading utp\.bin", timeout=30)
            # The status endpoint counts peers by transport while the download runs.
            deadline = time.monotonic() + 90
            seen_utp = False
            while not re.search(r"completed utp\.bin", server.log()):
                assert time.monotonic() < deadline, "the download over uTP did not finish"
                state = status(status_port)
                seen_utp = seen_utp or state["peers"]["utp"] > 0
                assert state["peers"]["tcp"] == 0
                time.sleep(0.2)
            assert same_tree(source / "utp.bin", data / "utp.bin")
            assert seen_utp or status(status_port)["downloaded_by_transport"]["utp"] >= 64 * MiB
            assert status(status_port)["downloaded_by_transport"]["tcp"] == 0
            assert server.stop() == 0
    finally:
        seed = None
