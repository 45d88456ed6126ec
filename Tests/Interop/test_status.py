"""The status endpoint and `seeder status`: after a known transfer (a libtorrent client
downloads one torrent found through opentracker), /status is valid JSON and /metrics
valid Prometheus exposition, both with the numbers of that transfer."""

import json
import re
import subprocess
import urllib.error
import urllib.request

import libtorrent as lt
from prometheus_client.parser import text_string_to_metric_families

from conftest import KiB, MiB, free_port, seeding_line, write_config, write_tree
from test_http_trackers import create, libtorrent_client, same_tree, wait_until_seeding
from trackers import OpenTracker


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers.get("Content-Type"), response.read()


def test_status_and_metrics_match_a_known_transfer(seeder, seeder_bin, start_seeder, tmp_path):
    size = 6 * MiB + 321
    data = write_tree(tmp_path / "data", {"known.bin": size, "idle.bin": 50 * KiB})
    tracker_port = free_port()
    url = f"http://127.0.0.1:{tracker_port}/announce"
    known = create(seeder, data / "known.bin", tmp_path / "known.torrent", url, piece_size=256 * KiB)
    idle = create(seeder, data / "idle.bin", tmp_path / "idle.torrent", url, piece_size=16 * KiB)
    known_hash = seeder.info_hash(known)
    tracker = OpenTracker(tmp_path / "opentracker", [known_hash, seeder.info_hash(idle)], port=tracker_port)
    session = None
    try:
        port, status_port = free_port(), free_port()
        config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", port=port,
                              settings={"trackers": {"announce_jitter": "0"},
                                        "status": {"listen": f'"127.0.0.1:{status_port}"'}})
        server = start_seeder("--config", config, "--data", data, known, idle)
        server.wait_for(seeding_line("known.bin"))
        server.wait_for(r"announced known\.bin to .*event=started")
        server.wait_for(r"announced idle\.bin to .*event=started")

        session = libtorrent_client("127.0.0.16")
        handle = session.add_torrent({"ti": lt.torrent_info(str(known)), "save_path": str(tmp_path / "client")})
        wait_until_seeding([handle], timeout=60)
        assert same_tree(data / "known.bin", tmp_path / "client" / "known.bin")

        base = f"http://127.0.0.1:{status_port}"
        code, content_type, body = get(base + "/status")
        assert code == 200 and content_type == "application/json"
        status = json.loads(body)
        assert status["listen_port"] == port
        assert status["transfer"]["uploaded"] == size
        assert status["counters"]["blocks_served"] == -(-size // (16 * KiB))
        assert status["counters"]["announces_succeeded"] >= 2
        torrents = {entry["name"]: entry for entry in status["torrents"]}
        assert set(torrents) == {"known.bin", "idle.bin"}
        entry = torrents["known.bin"]
        assert entry["info_hash"] == known_hash
        assert entry["state"] == "seeding" and entry["progress"] == 1.0
        assert entry["pieces_have"] == entry["pieces"] == 25
        assert entry["size"] == size
        assert entry["transfer"]["uploaded"] == size
        assert torrents["idle.bin"]["transfer"]["uploaded"] == 0
        [tracker_status] = entry["trackers"]
        assert tracker_status["url"] == url and tracker_status["status"] == "working"
        assert tracker_status["seeders"] >= 1 and 60 <= tracker_status["next_announce_in"] <= 3600

        code, content_type, body = get(base + "/metrics")
        assert code == 200 and content_type.startswith("text/plain; version=0.0.4")
        samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        # The client may have reached us over TCP or uTP: the transports add up to the transfer.
        assert samples[("seeder_uploaded_bytes_total", (("transport", "tcp"),))] \
            + samples[("seeder_uploaded_bytes_total", (("transport", "utp"),))] == size
        assert samples[("seeder_blocks_served_total", ())] == status["counters"]["blocks_served"]
        assert samples[("seeder_torrents", (("state", "seeding"),))] == 2
        assert samples[("seeder_torrent_uploaded_bytes_total", (("info_hash", known_hash), ("name", "known.bin")))] == size
        assert samples[("seeder_announces_total", (("result", "success"),))] >= 2

        try:
            get(base + "/nothing")
            assert False, "expected 404"
        except urllib.error.HTTPError as error:
            assert error.code == 404

        # The terminal view reads the same endpoint.
        table = subprocess.run([seeder_bin, "status", "--config", str(config)], capture_output=True, text=True, timeout=30)
        assert table.returncode == 0, table.stderr
        assert re.search(r"^known\.bin\s+seeding\s+100\.0%\s+6\.00 MiB\s+.*\s6\.00 MiB\s+\d+\s+ok \(", table.stdout, re.MULTILINE), table.stdout
        assert re.search(r"^idle\.bin\s+seeding", table.stdout, re.MULTILINE), table.stdout
        assert server.stop() == 0

        down = subprocess.run([seeder_bin, "status", "--url", base + "/status"], capture_output=True, text=True, timeout=30)
        assert down.returncode == 1 and "is the server running" in down.stderr
    finally:
        if session is not None:
            del session
        tracker.stop()
