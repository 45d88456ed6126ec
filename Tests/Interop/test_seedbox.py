"""Running as a seedbox: the watch folder, SIGHUP reloads, and start-up with hundreds of
torrents, against opentracker and python3-libtorrent."""

import hashlib
import os
import re
import shutil
import signal
import time
from pathlib import Path

import libtorrent as lt
import pytest

from conftest import KiB, MiB, bencode, free_port, seeding_line, write_config, write_tree
from test_http_trackers import create, libtorrent_client, same_tree, wait_until_seeding
from trackers import OpenTracker


def wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_watch_folder_add_then_remove(seeder, start_seeder, tmp_path):
    data = write_tree(tmp_path / "srv" / "data", {"dropped.bin": 2 * MiB + 5})
    tracker_port = free_port()
    url = f"http://127.0.0.1:{tracker_port}/announce"
    staged = create(seeder, data / "dropped.bin", tmp_path / "dropped.torrent", url, piece_size=64 * KiB)
    info_hash = seeder.info_hash(staged)
    tracker = OpenTracker(tmp_path / "opentracker", [info_hash], port=tracker_port)
    session = None
    try:
        port = free_port()
        config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", port=port,
                              settings={"trackers": {"announce_jitter": "0"}})
        (tmp_path / "srv" / "torrents").mkdir(parents=True)
        server = start_seeder("--config", config)
        server.wait_for(r"watching .*/srv/torrents for \.torrent files")

        # A half-written file never reaches the server: it is read once closed.
        watched = tmp_path / "srv" / "torrents" / "dropped.torrent"
        shutil.copy(staged, watched)
        server.wait_for(seeding_line("dropped.bin"), timeout=10)
        server.wait_for(r"announced dropped\.bin to .*event=started", timeout=10)
        assert ("127.0.0.1", port) in tracker.peers(info_hash)

        session = libtorrent_client("127.0.0.13")
        handle = session.add_torrent({"ti": lt.torrent_info(str(staged)), "save_path": str(tmp_path / "client")})
        wait_until_seeding([handle], timeout=30)
        assert same_tree(data / "dropped.bin", tmp_path / "client" / "dropped.bin")

        watched.unlink()
        server.wait_for(r"stopped seeding dropped\.bin: dropped\.torrent was removed", timeout=10)
        server.wait_for(r"announced dropped\.bin to .*event=stopped", timeout=10)
        assert ("127.0.0.1", port) not in tracker.peers(info_hash)

        # Garbage dropped in is refused with its name, and the server carries on.
        (tmp_path / "srv" / "torrents" / "broken.torrent").write_bytes(b"d4:infoi3ee")
        server.wait_for(r"refused torrent: .*file=.*broken\.torrent", timeout=10)
        server.assert_running()
        assert server.stop() == 0
    finally:
        if session is not None:
            del session
        tracker.stop()


def test_sighup_applies_new_torrent_and_limit_and_keeps_peers(seeder, start_seeder, tmp_path):
    base = tmp_path / "srv"
    data = write_tree(base / "data", {"first.bin": 8 * MiB, "second.bin": 1 * MiB + 17})
    first = create(seeder, data / "first.bin", tmp_path / "first.torrent", "http://127.0.0.1:9/announce")
    second = create(seeder, data / "second.bin", tmp_path / "second.torrent", "http://127.0.0.1:9/announce")
    port = free_port()

    def config(upload_limit: str, torrents, extra: str = "") -> Path:
        settings = {"limits": {"upload_limit": upload_limit}, "log": {"level": '"debug"'}}
        path = write_config(tmp_path / "seeder.toml", base=base, port=port, settings=settings)
        with open(path, "a") as text:
            for torrent in torrents:
                text.write(f'[[torrent]]\nfile = "{torrent}"\n\n')
            text.write(extra)
        return path

    path = config('"0"', [first])
    server = start_seeder("--config", path)
    server.wait_for(seeding_line("first.bin"))

    # A slow libtorrent leecher (1 MiB/s for 8 MiB) stays connected across the reloads.
    session = libtorrent_client("127.0.0.14", download_limit=1 * MiB)
    try:
        handle = session.add_torrent({"ti": lt.torrent_info(str(first)), "save_path": str(tmp_path / "client")})
        handle.connect_peer(("127.0.0.1", port))
        wait(lambda: handle.status().total_payload_download > 512 * KiB, 15, "the download to start")

        config('"5MiB/s"', [first, second])
        os.kill(server.pid, signal.SIGHUP)
        server.wait_for(r"config reloaded .*torrents_added=1 .*upload_limit=\"?5\.00 MiB/s", timeout=10)
        server.wait_for(seeding_line("second.bin"), timeout=10)

        # A broken config is refused whole; the running one stays and keeps serving.
        config('"fast"', [first])
        os.kill(server.pid, signal.SIGHUP)
        server.wait_for(r"reload refused, still running the previous config: .*limits\.upload_limit", timeout=10)
        assert handle.status().num_peers == 1 and not handle.status().is_seeding
        late = session.add_torrent({"ti": lt.torrent_info(str(second)), "save_path": str(tmp_path / "client")})
        late.connect_peer(("127.0.0.1", port))
        wait_until_seeding([late, handle], timeout=60)
        assert same_tree(data / "second.bin", tmp_path / "client" / "second.bin")
        assert same_tree(data / "first.bin", tmp_path / "client" / "first.bin")
        # One connection carried the whole first torrent: the reloads dropped nothing.
        connections = re.findall(r"peer connected .*peer=127\.0\.0\.14:.*torrent=first\.bin", server.log())
        assert len(connections) == 1, server.log()
        assert "stopped seeding" not in server.log()
        server.assert_running()
        assert server.stop() == 0
    finally:
        del session


def test_first_of_500_torrents_is_served_before_the_last_is_checked(seeder, start_seeder, tmp_path):
    """500 torrents over hard links to one 32 MiB file: each has its own name and so its
    own info-hash, and checking them all hashes 16 GiB on one disk thread, about ten
    seconds of work that must not hold back the torrents already checked."""
    source = write_tree(tmp_path / "payload", {"payload.bin": 32 * MiB}) / "payload.bin"
    piece = 256 * KiB
    content = source.read_bytes()
    pieces = b"".join(hashlib.sha1(content[i:i + piece]).digest() for i in range(0, len(content), piece))
    data = tmp_path / "data"
    data.mkdir()
    torrents = tmp_path / "torrents"
    torrents.mkdir()
    entries = ""
    for index in range(500):
        name = f"iso-{index:03}.bin"
        os.link(source, data / name)
        info = {"name": name, "piece length": piece, "length": len(content), "pieces": pieces}
        path = torrents / f"{index:03}.torrent"
        path.write_bytes(bencode({"announce": "http://127.0.0.1:9/announce", "info": info}))
        entries += f'[[torrent]]\nfile = "{path}"\ndata_dir = "{data}"\n\n'
    port = free_port()
    config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", port=port,
                          settings={"storage": {"disk_threads": "1"}})
    with open(config, "a") as text:
        text.write(entries)

    server = start_seeder("--config", config)
    server.wait_for(seeding_line("iso-000.bin"), timeout=30)
    session = libtorrent_client("127.0.0.15")
    try:
        first = session.add_torrent({"ti": lt.torrent_info(str(torrents / "000.torrent")),
                                     "save_path": str(tmp_path / "client")})
        first.connect_peer(("127.0.0.1", port))
        wait(lambda: first.status().total_payload_download >= 1 * MiB, 30, "the first torrent to be served")
        assert not re.search(seeding_line("iso-499.bin"), server.log()), "the last torrent was checked before the first was served"
        held, total, _ = server.wait_for(seeding_line("iso-499.bin"), timeout=120).groups()
        assert held == total == "128"
        wait_until_seeding([first], timeout=60)
        assert same_tree(source, tmp_path / "client" / "iso-000.bin")
        assert server.stop() == 0
    finally:
        del session


def test_a_fifo_in_the_watch_folder_does_not_hang_the_server(seeder, start_seeder, tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: one named *.torrent in the
    torrents directory, there at start or moved in later, must be refused, not wait on
    the loop thread while every peer starves."""
    data = write_tree(tmp_path / "srv" / "data", {"good.bin": 100 * KiB, "later.bin": 50 * KiB})
    torrents = tmp_path / "srv" / "torrents"
    torrents.mkdir(parents=True)
    os.mkfifo(torrents / "evil.torrent")
    create(seeder, data / "good.bin", torrents / "good.torrent", piece_size=16 * KiB)
    config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv")
    server = start_seeder("--config", config)
    server.wait_for(r"cannot load torrent: .*not a regular file.*evil\.torrent", timeout=10)
    server.wait_for(seeding_line("good.bin"), timeout=10)
    server.wait_for(r"watching .*/srv/torrents for \.torrent files")
    # Moved in while running, then a real torrent after it.
    os.mkfifo(tmp_path / "late.fifo")
    os.rename(tmp_path / "late.fifo", torrents / "late.torrent")
    server.wait_for(r"cannot load torrent: .*not a regular file.*late\.torrent", timeout=10)
    staged = create(seeder, data / "later.bin", tmp_path / "later.torrent", piece_size=16 * KiB)
    shutil.copy(staged, torrents / "later.torrent")
    server.wait_for(seeding_line("later.bin"), timeout=10)
    server.assert_running()
    assert server.stop() == 0
