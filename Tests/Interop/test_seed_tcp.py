"""`seeder run` seeds over TCP to real clients: libtorrent (told the peer directly with
connect_peer), Transmission 3.00 and aria2 (both through a tiny HTTP tracker in this
file that hands out the seeder's address). Every download is compared byte for byte
with the source."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import KiB, MiB, free_port, seeding_line, write_config, write_tree
from peers import (NetNamespace, TinyTracker, add_download, limit_download, lt_session, make_torrent, tree_digest,
                   wait_for_download)


def serve(start_seeder, tmp_path, trees: dict, piece_length: int, tracker: str = None, settings: dict = None,
          port: int = None, prefix=()):
    """Writes each tree {name: {relative path: size}} under base/data, makes a v1
    torrent of each, and starts `seeder run` on them. Returns (server, port, torrents)."""
    base = tmp_path / "srv"
    data = base / "data"
    torrents = {}
    for seed, (name, sizes) in enumerate(trees.items(), start=1):
        write_tree(data, sizes, seed=seed)
        torrents[name] = make_torrent(data / name, tmp_path / f"{name}.torrent", piece_length, tracker)
    port = port or free_port()
    config = write_config(tmp_path / "seeder.toml", base=base, port=port, settings=settings)
    server = start_seeder("--config", config, *torrents.values(), prefix=prefix)
    for name in trees:
        held, total, _ = server.wait_for(seeding_line(name), timeout=60).groups()
        assert held == total, f"{name}: the seeder holds {held} of {total} pieces"
    return server, port, torrents


def assert_same(downloaded: Path, source: Path):
    assert downloaded.exists(), f"{downloaded} was not created"
    assert tree_digest(downloaded) == tree_digest(source)


def test_libtorrent_single_file_64mib(start_seeder, tmp_path):
    server, port, torrents = serve(start_seeder, tmp_path, {"big.bin": {"big.bin": 64 * MiB}}, 256 * KiB)
    session = lt_session("127.0.0.11")
    try:
        handle = add_download(session, torrents["big.bin"], tmp_path / "dl")
        result = wait_for_download(session, handle, ("127.0.0.1", port), timeout=90)
    finally:
        del session
    assert_same(tmp_path / "dl" / "big.bin", tmp_path / "srv" / "data" / "big.bin")
    print(f"64 MiB in {result['seconds']:.1f} s")
    server.assert_running()
    assert server.stop() == 0


def test_libtorrent_multi_file_nested_and_empty(start_seeder, tmp_path):
    sizes = {
        "tree/a.bin": 300 * KiB + 7,
        "tree/sub/b.bin": 1 * MiB + 3,
        "tree/sub/deeper/c.bin": 17,
        "tree/sub/deeper/empty": 0,
        "tree/sub-file": 65 * KiB,
        "tree/z/last.bin": 2 * MiB - 1,
    }
    server, port, torrents = serve(start_seeder, tmp_path, {"tree": sizes}, 64 * KiB)
    session = lt_session("127.0.0.11")
    try:
        handle = add_download(session, torrents["tree"], tmp_path / "dl")
        wait_for_download(session, handle, ("127.0.0.1", port), timeout=60)
        handle.flush_cache()
    finally:
        del session
    got = tree_digest(tmp_path / "dl" / "tree")
    want = tree_digest(tmp_path / "srv" / "data" / "tree")
    # libtorrent creates the empty file itself (nothing is transferred for it).
    assert got == want
    server.assert_running()
    assert server.stop() == 0


def test_two_libtorrent_clients_two_torrents_at_once(start_seeder, tmp_path):
    trees = {"one.bin": {"one.bin": 24 * MiB + 5}, "two": {"two/x.bin": 9 * MiB, "two/y/z.bin": 15 * MiB + 11}}
    server, port, torrents = serve(start_seeder, tmp_path, trees, 128 * KiB)
    first, second = lt_session("127.0.0.11"), lt_session("127.0.0.12")
    # About 3 s each at 8 MiB/s, so that "at once" can be observed.
    limit_download(first, 8 * MiB)
    limit_download(second, 8 * MiB)
    try:
        handles = [add_download(first, torrents["one.bin"], tmp_path / "dl1"),
                   add_download(second, torrents["two"], tmp_path / "dl2")]
        for handle in handles:
            handle.connect_peer(("127.0.0.1", port))
        # Both are served at once: wait for the first while polling the second too.
        deadline = time.monotonic() + 90
        overlapped = False
        while not all(handle.status().is_seeding for handle in handles):
            states = [handle.status() for handle in handles]
            if all(status.num_peers > 0 and status.progress > 0 and not status.is_seeding for status in states):
                overlapped = True
            for handle, status in zip(handles, states):
                if status.num_peers == 0 and not status.is_seeding:
                    handle.connect_peer(("127.0.0.1", port))
            assert time.monotonic() < deadline, f"not done: {[(s.progress, s.num_peers) for s in states]}"
            time.sleep(0.05)
    finally:
        del first, second
    assert overlapped, "the two downloads never ran at the same time"
    assert_same(tmp_path / "dl1" / "one.bin", tmp_path / "srv" / "data" / "one.bin")
    assert_same(tmp_path / "dl2" / "two", tmp_path / "srv" / "data" / "two")
    server.assert_running()
    assert server.stop() == 0


class Program:
    """A client process, always stopped by its PID."""

    def __init__(self, argv, log: Path, cwd: Path = None, env=None):
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            cwd=cwd, env=env)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self):
        for number, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if self.process.poll() is not None:
                return
            os.kill(self.process.pid, number)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass


def wait_for_file(path: Path, source: Path, timeout: float, program: Program, exits: bool = False):
    """Waits until `path` has the source's bytes (and, with `exits`, the program exited 0)."""
    want = tree_digest(source)
    size = source.stat().st_size
    deadline = time.monotonic() + timeout
    while True:
        if path.exists() and path.stat().st_size == size and tree_digest(path) == want:
            if not exits:
                return
            if program.process.poll() is not None:
                assert program.process.returncode == 0, program.output()[-3000:]
                return
        elif exits and program.process.poll() is not None:
            pytest.fail(f"exited with {program.process.returncode} before the download was complete:\n{program.output()[-3000:]}")
        assert time.monotonic() < deadline, f"{path} not complete within {timeout} s:\n{program.output()[-3000:]}"
        time.sleep(0.5)


def test_transmission_downloads(start_seeder, tmp_path):
    """Transmission 3.00 never dials 127.0.0.0/8 or ::1 (its martian-address filter),
    so the seeder, the tracker and Transmission share a private network namespace in
    which the seeder is 10.77.0.1 and Transmission 10.77.0.2. Plaintext TCP: encryption
    "tolerated" (-et, settings encryption 0), uTP off."""
    seeder_ip, client_ip, seeder_port, tracker_port = "10.77.0.1", "10.77.0.2", 6881, 6969
    with NetNamespace([seeder_ip, client_ip]) as namespace:
        tracker = Program([*namespace.prefix, "/usr/bin/python3", str(Path(__file__).with_name("peers.py")), "tracker",
                           seeder_ip, str(tracker_port), f"{seeder_ip}:{seeder_port}"], tmp_path / "tracker.log")
        try:
            url = f"http://{seeder_ip}:{tracker_port}/announce"
            server, _, torrents = serve(start_seeder, tmp_path, {"tr.bin": {"tr.bin": 12 * MiB + 9}}, 256 * KiB,
                                        tracker=url, port=seeder_port, prefix=namespace.prefix,
                                        settings={"network": {"bind_ipv4": f'"{seeder_ip}"', "bind_ipv6": '""'}})
            config_dir = tmp_path / "transmission"
            config_dir.mkdir()
            download = tmp_path / "dl-tr"
            download.mkdir()
            (config_dir / "settings.json").write_text(json.dumps({
                "encryption": 0,  # prefer plaintext: the seeder does not speak MSE
                "utp-enabled": False,
                "dht-enabled": False,
                "lpd-enabled": False,
                "pex-enabled": False,
                "port-forwarding-enabled": False,
                "bind-address-ipv4": client_ip,
                "peer-port": 51413,
                "rename-partial-files": False,
                "download-dir": str(download),
                "message-level": 3,
            }))
            client = Program([*namespace.prefix, "transmission-cli", "-g", str(config_dir), "-w", str(download), "-et",
                              str(torrents["tr.bin"])], tmp_path / "transmission.log")
            try:
                wait_for_file(download / "tr.bin", tmp_path / "srv" / "data" / "tr.bin", 90, client)
            finally:
                client.stop()
            assert "announce /announce?" in tracker.output(), "transmission never announced"
            server.assert_running()
            assert server.stop() == 0
        finally:
            tracker.stop()


def test_aria2_downloads(start_seeder, tmp_path):
    with TinyTracker([]) as tracker:
        server, port, torrents = serve(start_seeder, tmp_path, {"ar.bin": {"ar.bin": 16 * MiB + 3}}, 256 * KiB,
                                       tracker=tracker.url)
        tracker.peers = [("127.0.0.1", port)]
        download = tmp_path / "dl-aria2"
        client = Program(["aria2c", "--dir", str(download), "--seed-time=0", "--enable-dht=false",
                          "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
                          "--bt-require-crypto=false", "--interface=127.0.0.14", "--disable-ipv6=true",
                          f"--listen-port={free_port()}", "--follow-torrent=mem", "--summary-interval=0",
                          "--check-integrity=false", "--bt-stop-timeout=80", "--console-log-level=notice",
                          str(torrents["ar.bin"])], tmp_path / "aria2.log", cwd=tmp_path)
        try:
            wait_for_file(download / "ar.bin", tmp_path / "srv" / "data" / "ar.bin", 90, client, exits=True)
        finally:
            client.stop()
        assert tracker.announces, "aria2 never announced"
    server.assert_running()
    assert server.stop() == 0
