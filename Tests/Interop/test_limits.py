"""Upload limits against python3-libtorrent leechers: the global limit and per-torrent
limits hold from the first payload byte, and SIGHUP changes them live without dropping
a connection."""

import os
import re
import signal
import time

import libtorrent as lt

import peers
from conftest import KiB, MiB, free_port, seeding_line, write_config, write_tree
from test_http_trackers import create, libtorrent_client, wait_until_seeding

TRACKER = "http://127.0.0.1:9/announce"


class Meter:
    """Samples a libtorrent handle's payload total: the average from the first byte, and
    the worst one-second window."""

    def __init__(self, handle):
        self.handle = handle
        self.samples = []

    def run(self, seconds: float, stop_early=lambda: False):
        deadline = None
        while True:
            now = time.monotonic()
            total = self.handle.status().total_payload_download
            if total > 0:
                self.samples.append((now, total))
                if deadline is None:
                    deadline = now + seconds
            if deadline is not None and now >= deadline or stop_early():
                return
            time.sleep(0.05)

    def average(self, since: float = None) -> float:
        samples = [s for s in self.samples if since is None or s[0] >= since]
        (t0, b0), (t1, b1) = samples[0], samples[-1]
        return (b1 - b0) / (t1 - t0)

    def worst_second(self) -> float:
        worst = 0
        for index, (t0, b0) in enumerate(self.samples):
            for t1, b1 in self.samples[index:]:
                if t1 - t0 >= 1.0:
                    worst = max(worst, (b1 - b0) / (t1 - t0))
                    break
        return worst


def start(seeder, start_seeder, tmp_path, files: dict, settings: dict, torrent_limits: dict = None):
    data = write_tree(tmp_path / "data", files)
    port = free_port()
    torrents = {name: create(seeder, data / name, tmp_path / f"{name}.torrent", TRACKER, piece_size=1 * MiB) for name in files}
    config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", port=port, settings=settings)
    with open(config, "a") as text:
        for name, torrent in torrents.items():
            text.write(f'[[torrent]]\nfile = "{torrent}"\ndata_dir = "{data}"\n')
            for key, value in (torrent_limits or {}).get(name, {}).items():
                text.write(f'{key} = "{value}"\n')
            text.write("\n")
    server = start_seeder("--config", config)
    for name in files:
        server.wait_for(seeding_line(name))
    return server, port, torrents, config


def leech(ip: str, torrent, port: int, save: str):
    session = libtorrent_client(ip)
    handle = session.add_torrent({"ti": lt.torrent_info(str(torrent)), "save_path": save})
    handle.connect_peer(("127.0.0.1", port))
    return session, handle


def test_global_upload_limit_holds_over_tcp(seeder, start_seeder, tmp_path):
    limit = 5 * MiB
    server, port, torrents, _ = start(seeder, start_seeder, tmp_path, {"limited.iso": 160 * MiB},
                                      {"limits": {"upload_limit": '"5MiB/s"'}})
    session, handle = leech("127.0.0.21", torrents["limited.iso"], port, str(tmp_path / "client"))
    try:
        meter = Meter(handle)
        meter.run(20)
        average = meter.average()
        assert abs(average - limit) / limit < 0.05, f"{average / MiB:.3f} MiB/s against a 5 MiB/s limit"
        assert meter.worst_second() < 1.10 * limit, f"worst second {meter.worst_second() / MiB:.3f} MiB/s"
        assert server.stop() == 0
    finally:
        del session


def test_two_torrents_hold_their_own_limits(seeder, start_seeder, tmp_path):
    server, port, torrents, _ = start(
        seeder, start_seeder, tmp_path, {"two.iso": 80 * MiB, "four.iso": 160 * MiB}, {},
        torrent_limits={"two.iso": {"upload_limit": "2MiB/s"}, "four.iso": {"upload_limit": "4MiB/s"}})
    first, slow = leech("127.0.0.22", torrents["two.iso"], port, str(tmp_path / "a"))
    second, fast = leech("127.0.0.23", torrents["four.iso"], port, str(tmp_path / "b"))
    try:
        slow_meter, fast_meter = Meter(slow), Meter(fast)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for meter in (slow_meter, fast_meter):
                total = meter.handle.status().total_payload_download
                if total > 0:
                    meter.samples.append((time.monotonic(), total))
            time.sleep(0.05)
        for meter, limit in ((slow_meter, 2 * MiB), (fast_meter, 4 * MiB)):
            average = meter.average(since=meter.samples[0][0] + 2)
            assert abs(average - limit) / limit < 0.05, f"{average / MiB:.3f} MiB/s against {limit / MiB} MiB/s"
        assert server.stop() == 0
    finally:
        del first, second


def test_sighup_changes_the_limit_within_a_second_and_keeps_the_peer(seeder, start_seeder, tmp_path):
    server, port, torrents, config = start(seeder, start_seeder, tmp_path, {"live.iso": 120 * MiB},
                                           {"limits": {"upload_limit": '"2MiB/s"'}, "log": {"level": '"debug"'}})
    session, handle = leech("127.0.0.24", torrents["live.iso"], port, str(tmp_path / "client"))
    try:
        meter = Meter(handle)
        meter.run(5)
        assert abs(meter.average() - 2 * MiB) / (2 * MiB) < 0.08
        config.write_text(config.read_text().replace('upload_limit = "2MiB/s"', 'upload_limit = "6MiB/s"'))
        os.kill(server.pid, signal.SIGHUP)
        changed = time.monotonic()
        server.wait_for(r"config reloaded .*upload_limit=\"?6\.00 MiB/s", timeout=5)
        meter.run(6)
        average = meter.average(since=changed + 1.0)
        assert abs(average - 6 * MiB) / (6 * MiB) < 0.08, f"{average / MiB:.3f} MiB/s a second after the change to 6 MiB/s"
        connections = re.findall(r"peer connected .*peer=127\.0\.0\.24:", server.log())
        assert len(connections) == 1 and handle.status().num_peers == 1
        assert server.stop() == 0
    finally:
        del session


def test_global_upload_limit_holds_over_utp(seeder, start_seeder, tmp_path):
    """The same limit on the other transport: a libtorrent leecher with TCP off."""
    limit = 5 * MiB
    server, port, torrents, _ = start(seeder, start_seeder, tmp_path, {"utp-limited.iso": 160 * MiB},
                                      {"limits": {"upload_limit": '"5MiB/s"'}})
    session = peers.lt_session("127.0.0.25", extra={"enable_outgoing_tcp": False, "enable_incoming_tcp": False,
                                                     "enable_outgoing_utp": True, "enable_incoming_utp": True})
    try:
        handle = peers.add_download(session, torrents["utp-limited.iso"], tmp_path / "client")
        handle.connect_peer(("127.0.0.1", port))
        meter = Meter(handle)
        meter.run(20)
        assert all(peer.flags & UTP_SOCKET for peer in handle.get_peer_info()), "not over uTP"
        average = meter.average()
        assert abs(average - limit) / limit < 0.05, f"{average / MiB:.3f} MiB/s against a 5 MiB/s limit over uTP"
        assert meter.worst_second() < 1.10 * limit, f"worst second {meter.worst_second() / MiB:.3f} MiB/s"
        assert server.stop() == 0
    finally:
        del session


def test_download_limit_holds_against_a_libtorrent_seed(seeder, start_seeder, tmp_path):
    """3 MiB/s of download, measured on the seed's side from the first payload byte."""
    limit = 3 * MiB
    source = write_tree(tmp_path / "source", {"pulled.bin": 96 * MiB})
    seed = peers.lt_session("127.0.0.26")
    try:
        handle = peers.add_download(seed, peers.make_torrent(source / "pulled.bin", tmp_path / "plain.torrent", 1 * MiB), source)
        wait_until_seeding([handle], 60)
        with peers.TinyTracker([("127.0.0.26", seed.listen_port())]) as tracker:
            torrent = peers.make_torrent(source / "pulled.bin", tmp_path / "pulled.torrent", 1 * MiB, tracker.url)
            config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv",
                                  settings={"limits": {"download_limit": '"3MiB/s"'},
                                            "network": {"utp": "false", "outgoing": '"tcp_only"'},
                                            "trackers": {"announce_jitter": "0"}})
            (tmp_path / "srv" / "data").mkdir(parents=True)
            server = start_seeder("--config", config, "--data", tmp_path / "srv" / "data", torrent)
            samples = []
            started = time.monotonic()
            deadline = None
            while deadline is None or time.monotonic() < deadline:
                now = time.monotonic()
                total = handle.status().total_payload_upload
                if total > 0:
                    samples.append((now, total))
                    deadline = deadline or now + 20
                assert deadline or now - started < 60, "the download never started"
                server.assert_running()
                time.sleep(0.05)
            (t0, b0), (t1, b1) = samples[0], samples[-1]
            average = (b1 - b0) / (t1 - t0)
            assert abs(average - limit) / limit < 0.05, f"{average / MiB:.3f} MiB/s against a 3 MiB/s download limit"
            assert server.stop() == 0
    finally:
        del seed


UTP_SOCKET = 1 << 17  # peer_info.utp_socket, which the Python binding does not name
