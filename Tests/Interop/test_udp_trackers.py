"""UDP trackers (BEP 15): the seeder announces to opentracker over udp://, a libtorrent
client that knows only that URL finds it and downloads, `stopped` takes it off the
tracker, and a tier whose first tracker never answers fails over to the second."""

import json
import re
import socket
import time
import urllib.request

import libtorrent as lt

from conftest import KiB, MiB, free_port, seeding_line, write_config, write_tree
from test_http_trackers import create, libtorrent_client, same_tree, wait_until_seeding
from trackers import OpenTracker


def test_libtorrent_finds_seeder_through_udp_opentracker(seeder, start_seeder, tmp_path):
    data = write_tree(tmp_path / "data", {"udp.iso": 12 * MiB + 1})
    tracker_port = free_port()
    url = f"udp://127.0.0.1:{tracker_port}/announce"
    torrent = create(seeder, data / "udp.iso", tmp_path / "udp.torrent", url, piece_size=256 * KiB)
    info_hash = seeder.info_hash(torrent)
    tracker = OpenTracker(tmp_path / "opentracker", [info_hash], port=tracker_port)
    session = None
    try:
        port = free_port()
        config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", port=port,
                              settings={"trackers": {"announce_jitter": "0"}})
        server = start_seeder("--config", config, "--data", data, torrent)
        server.wait_for(seeding_line("udp.iso"))
        server.wait_for(rf"announced udp\.iso to {re.escape(url)}.*event=started", timeout=15)
        # opentracker keeps one swarm for HTTP and UDP: its HTTP side shows the UDP announce.
        assert ("127.0.0.1", port) in tracker.peers(info_hash)

        session = libtorrent_client("127.0.0.17")
        handle = session.add_torrent({"ti": lt.torrent_info(str(torrent)), "save_path": str(tmp_path / "client")})
        wait_until_seeding([handle], timeout=60)
        assert same_tree(data / "udp.iso", tmp_path / "client" / "udp.iso")

        assert server.stop() == 0
        assert re.search(rf"announced udp\.iso to {re.escape(url)}.*event=stopped", server.log()), server.log()
        assert ("127.0.0.1", port) not in tracker.peers(info_hash)
    finally:
        if session is not None:
            del session
        tracker.stop()


def test_tier_fails_over_from_a_silent_udp_tracker_and_promotes_the_second(seeder, start_seeder, tmp_path):
    """Each torrent shuffles its tier (BEP 12), so ten torrents share the tier: the
    silent tracker comes first for all but about one in a thousand runs' worth of them."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    dead = f"udp://127.0.0.1:{silent.getsockname()[1]}/announce"
    tracker_port = free_port()
    good = f"udp://127.0.0.1:{tracker_port}/announce"
    names = [f"tier{index}.bin" for index in range(10)]
    data = tmp_path / "data"
    torrents = []
    for index, name in enumerate(names):
        write_tree(data, {name: 20 * KiB + index}, seed=index)
        torrents.append(create(seeder, data / name, tmp_path / f"{name}.torrent", f"{dead},{good}", piece_size=16 * KiB))
    hashes = [seeder.info_hash(torrent) for torrent in torrents]
    tracker = OpenTracker(tmp_path / "opentracker", hashes, port=tracker_port)
    try:
        port, status_port = free_port(), free_port()
        # No retransmission: the silent tracker fails after its first 15 s timeout.
        config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", port=port,
                              settings={"trackers": {"announce_jitter": "0", "udp_retries": "0"},
                                        "status": {"listen": f'"127.0.0.1:{status_port}"'}})
        server = start_seeder("--config", config, "--data", data, *torrents)
        for name in names:
            server.wait_for(rf"announced {re.escape(name)} to {re.escape(good)}.*event=started", timeout=40)
        failed_over = re.findall(rf"announce of (tier\d\.bin) to {re.escape(dead)} failed: ", server.log())
        assert failed_over, "no torrent tried the silent tracker first"
        assert silent.recv(100, socket.MSG_DONTWAIT)[:12] == bytes.fromhex("0000041727101980") + b"\0\0\0\0"

        status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status", timeout=5).read())
        for torrent in status["torrents"]:
            trackers = torrent["trackers"]
            assert [entry["url"] for entry in trackers] == [good, dead], trackers
            assert trackers[0]["status"] == "working"
            assert trackers[1]["status"] == ("failing" if torrent["name"] in failed_over else "not contacted")
        for info_hash in hashes:
            assert ("127.0.0.1", port) in tracker.peers(info_hash)
        assert server.stop() == 0
        for info_hash in hashes:
            assert ("127.0.0.1", port) not in tracker.peers(info_hash)
    finally:
        silent.close()
        tracker.stop()
