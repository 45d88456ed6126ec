"""HTTP(S) trackers (BEP 3, 12, 23): the seeder announces to opentracker, a libtorrent
client that knows only the tracker finds it and downloads, and shutdown's `stopped`
takes it off the tracker. Broken trackers are logged, retried with backoff, never fatal."""

import filecmp
import re
import shutil
import time
from pathlib import Path

import libtorrent as lt
import pytest

from conftest import KiB, MiB, bencode, free_port, seeding_line, write_config, write_tree
from trackers import OpenTracker, ScriptedTracker


def create(seeder, source: Path, output: Path, *announce: str, piece_size=256 * KiB) -> Path:
    args = ["create", source, "--piece-size", piece_size, "-o", output]
    for url in announce:
        args += ["-a", url]
    seeder.checked(*args)
    return output


def libtorrent_client(ip: str, download_limit: int = 0) -> lt.session:
    """A libtorrent session on its own loopback address (libtorrent keys peers by IP, and
    the tracker hands out addresses), with DHT and local discovery off. A download limit
    needs every address mapped to the global peer class: libtorrent exempts loopback."""
    session = lt.session({
        "listen_interfaces": f"{ip}:0",
        "outgoing_interfaces": ip,
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "recv_socket_buffer_size": 4 * MiB, "send_socket_buffer_size": 4 * MiB,
        "download_rate_limit": download_limit,
        "alert_mask": lt.alert.category_t.error_notification | lt.alert.category_t.tracker_notification,
    })
    if download_limit:
        everyone = lt.ip_filter()
        everyone.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        session.set_peer_class_filter(everyone)
    return session


def wait_until_seeding(handles, timeout: float):
    deadline = time.monotonic() + timeout
    while not all(handle.status().is_seeding for handle in handles):
        if time.monotonic() > deadline:
            states = [(h.status().name, h.status().progress, h.status().num_peers, h.status().current_tracker)
                      for h in handles]
            pytest.fail(f"downloads did not finish within {timeout} s: {states}")
        time.sleep(0.1)


def same_tree(left: Path, right: Path) -> bool:
    if left.is_file():
        return right.is_file() and filecmp.cmp(left, right, shallow=False)
    for path in left.rglob("*"):
        other = right / path.relative_to(left)
        if path.is_file() and not (other.is_file() and filecmp.cmp(path, other, shallow=False)):
            return False
    return True


def test_libtorrent_finds_seeder_through_opentracker_and_stopped_removes_it(seeder, start_seeder, tmp_path):
    data = write_tree(tmp_path / "data", {
        "big.iso": 64 * MiB,
        "tree/a/b/c.bin": 3 * MiB + 123,
        "tree/a/x.bin": 777,
        "tree/empty": 0,
        "tree/z.bin": 1 * MiB,
    })
    tracker_port = free_port()
    url = f"http://127.0.0.1:{tracker_port}/announce"
    big = create(seeder, data / "big.iso", tmp_path / "big.torrent", url, piece_size=1 * MiB)
    tree = create(seeder, data / "tree", tmp_path / "tree.torrent", url, piece_size=64 * KiB)
    hashes = {name: seeder.info_hash(path) for name, path in (("big.iso", big), ("tree", tree))}
    tracker = OpenTracker(tmp_path / "opentracker", hashes.values(), port=tracker_port)
    session = None
    try:
        port = free_port()
        config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", port=port,
                              settings={"trackers": {"announce_jitter": "0"}})
        server = start_seeder("--config", config, "--data", data, big, tree)
        for name in hashes:
            server.wait_for(seeding_line(name), timeout=30)
            server.wait_for(rf"announced {re.escape(name)} to {re.escape(url)}.*event=started", timeout=15)
        for info_hash in hashes.values():
            assert ("127.0.0.1", port) in tracker.peers(info_hash)

        session = libtorrent_client("127.0.0.11")
        downloads = tmp_path / "client"
        handles = [session.add_torrent({"ti": lt.torrent_info(str(path)), "save_path": str(downloads)})
                   for path in (big, tree)]
        wait_until_seeding(handles, timeout=180)
        assert same_tree(data / "big.iso", downloads / "big.iso")
        assert same_tree(data / "tree", downloads / "tree")
        assert (downloads / "tree" / "empty").is_file()

        assert server.stop() == 0
        log = server.log()
        for name in hashes:
            assert re.search(rf"announced {re.escape(name)} to {re.escape(url)}.*event=stopped", log), log
        for info_hash in hashes.values():
            assert ("127.0.0.1", port) not in tracker.peers(info_hash)
    finally:
        if session is not None:
            del session
        tracker.stop()


def test_broken_trackers_are_logged_and_retried_with_backoff(seeder, start_seeder, tmp_path):
    scripted = ScriptedTracker({
        "/500/announce": (500, b"Internal Server Error"),
        "/garbage/announce": (200, b"<html><body>hello</body></html>"),
        "/refuse/announce": (200, bencode({"failure reason": "torrent not registered here"})),
    })
    dead = f"http://127.0.0.1:{free_port()}/announce"
    cases = {
        "down": (dead, r"failed: "),
        "http500": (scripted.url("/500/announce"), r"failed: tracker answered HTTP 500"),
        "garbage": (scripted.url("/garbage/announce"), r"failed: invalid tracker response: it is not bencode"),
        "refuse": (scripted.url("/refuse/announce"), r"failed: tracker refused the announce: torrent not registered here"),
    }
    try:
        data = tmp_path / "data"
        torrents = []
        for index, (name, (url, _)) in enumerate(cases.items()):
            write_tree(data, {f"{name}.bin": 40 * KiB + index}, seed=index)
            torrents.append(create(seeder, data / f"{name}.bin", tmp_path / f"{name}.torrent", url, piece_size=16 * KiB))
        config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv",
                              settings={"trackers": {"announce_jitter": "0", "announce_timeout": "5"}})
        server = start_seeder("--config", config, "--data", data, *torrents)
        for name, (url, message) in cases.items():
            line = server.wait_for(rf"announce of {name}\.bin to {re.escape(url)} {message}.*", timeout=15).group(0)
            retry = re.search(r"retry_in=(\d+)s", line)
            assert retry and 10 <= int(retry.group(1)) <= 15, line
        # Each scripted tracker is asked again after the backoff (15 s less up to a quarter), not before.
        deadline = time.monotonic() + 25
        paths = ["/500/announce", "/garbage/announce", "/refuse/announce"]
        while any(len(scripted.times(path)) < 2 for path in paths):
            assert time.monotonic() < deadline, scripted.requests
            server.assert_running()
            time.sleep(0.2)
        for path in paths:
            first, second = scripted.times(path)[:2]
            assert 11 <= second - first <= 16, (path, second - first)
        server.assert_running()
        assert server.stop() == 0
        # No tracker accepted a `started`, so there is nobody to send `stopped` to.
        assert "event=stopped" not in server.log()
    finally:
        scripted.stop()


def test_failed_tracker_fails_over_within_its_tier(seeder, start_seeder, tmp_path):
    data = write_tree(tmp_path / "data", {"tiered.bin": 100 * KiB})
    tracker_port = free_port()
    good = f"http://127.0.0.1:{tracker_port}/announce"
    dead = f"http://127.0.0.1:{free_port()}/announce"
    torrent = create(seeder, data / "tiered.bin", tmp_path / "tiered.torrent", f"{dead},{good}", piece_size=16 * KiB)
    tracker = OpenTracker(tmp_path / "opentracker", [seeder.info_hash(torrent)], port=tracker_port)
    try:
        config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv",
                              settings={"trackers": {"announce_jitter": "0"}})
        server = start_seeder("--config", config, "--data", data, torrent)
        server.wait_for(rf"announced tiered\.bin to {re.escape(good)}.*event=started", timeout=15)
        assert server.stop() == 0
        assert re.search(rf"announced tiered\.bin to {re.escape(good)}.*event=stopped", server.log())
    finally:
        tracker.stop()


def test_stopped_announces_do_not_hold_shutdown_past_the_deadline(seeder, start_seeder, tmp_path):
    def slow_on_stop(query):
        if query.get("event") == ["stopped"]:
            time.sleep(20)
        return 200, bencode({"interval": 1800, "peers": b""})

    scripted = ScriptedTracker({"/slow/announce": slow_on_stop})
    try:
        data = write_tree(tmp_path / "data", {"slow.bin": 20 * KiB})
        torrent = create(seeder, data / "slow.bin", tmp_path / "slow.torrent", scripted.url("/slow/announce"),
                         piece_size=16 * KiB)
        config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv",
                              settings={"trackers": {"announce_jitter": "0", "stop_timeout": "2"}})
        server = start_seeder("--config", config, "--data", data, torrent)
        server.wait_for(r"announced slow\.bin to .*event=started", timeout=15)
        began = time.monotonic()
        assert server.stop(timeout=10) == 0
        assert 1.5 <= time.monotonic() - began <= 4
        assert "gave up on 1 `stopped` announces after 2 s" in server.log()
        assert scripted.times("/slow/announce")[-1] >= began  # the `stopped` was sent
    finally:
        scripted.stop()


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted-ca", "unknown-ca"])
def test_https_tracker_certificate_is_checked(seeder, start_seeder, tmp_path, trusted):
    import ssl
    from trackers import make_certificate_authority

    ca, cert, key = make_certificate_authority(tmp_path / "tls", "tracker")
    other_ca, _, _ = make_certificate_authority(tmp_path / "tls", "other")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    scripted = ScriptedTracker({"/announce": (200, bencode({"interval": 1800, "peers": b""}))}, tls=tls)
    try:
        data = write_tree(tmp_path / "data", {"secure.bin": 20 * KiB})
        url = scripted.url("/announce")
        assert url.startswith("https://")
        torrent = create(seeder, data / "secure.bin", tmp_path / "secure.torrent", url, piece_size=16 * KiB)
        config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv",
                              settings={"trackers": {"announce_jitter": "0"}})
        # OpenSSL's default verify paths honour SSL_CERT_FILE: the system store, swapped for a test CA.
        server = start_seeder("--config", config, "--data", data, torrent,
                              extra_env={"SSL_CERT_FILE": str(ca if trusted else other_ca)})
        if trusted:
            server.wait_for(rf"announced secure\.bin to {re.escape(url)}.*event=started", timeout=15)
            assert scripted.times("/announce")
        else:
            server.wait_for(rf"announce of secure\.bin to {re.escape(url)} failed: TLS: .*certificate verify failed", timeout=15)
            assert not scripted.times("/announce")
        assert server.stop() == 0
    finally:
        scripted.stop()


def test_seeder_dials_a_leecher_it_learns_from_the_tracker(seeder, start_seeder, tmp_path):
    """The leecher announces first and then never hears of the seeder (its next announce
    is half an hour away): only the seeder's outgoing connection can serve it."""
    data = write_tree(tmp_path / "data", {"dialed.bin": 3 * MiB})
    tracker_port = free_port()
    url = f"http://127.0.0.1:{tracker_port}/announce"
    torrent = create(seeder, data / "dialed.bin", tmp_path / "dialed.torrent", url, piece_size=256 * KiB)
    tracker = OpenTracker(tmp_path / "opentracker", [seeder.info_hash(torrent)], port=tracker_port)
    session = None
    try:
        session = libtorrent_client("127.0.0.12")
        downloads = tmp_path / "client"
        handle = session.add_torrent({"ti": lt.torrent_info(str(torrent)), "save_path": str(downloads)})
        deadline = time.monotonic() + 15
        while not any(ip == "127.0.0.12" for ip, _ in tracker.peers(seeder.info_hash(torrent))):
            assert time.monotonic() < deadline, "the leecher never announced"
            time.sleep(0.1)

        config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv",
                              settings={"trackers": {"announce_jitter": "0"}, "log": {"level": '"debug"'}})
        server = start_seeder("--config", config, "--data", data, torrent)
        wait_until_seeding([handle], timeout=60)
        assert same_tree(data / "dialed.bin", downloads / "dialed.bin")
        assert re.search(r"peer connected .*direction=out.*peer=127\.0\.0\.12:", server.log()), server.log()
        assert server.stop() == 0
    finally:
        if session is not None:
            del session
        tracker.stop()


def test_a_tracker_that_trickles_its_answer_times_out(seeder, start_seeder, tmp_path):
    """`announce_timeout` bounds the whole announce: a tracker that sends a byte every
    second never lets an idle timeout fire, and must not hold the announce (and one of
    the `max_concurrent_announces` slots) for ever."""
    import socket
    import threading

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.5)
    stop = threading.Event()
    requested = []

    def trickle():
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            requested.append(time.monotonic())
            try:
                client.recv(65536)
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not stop.wait(1):
                    client.sendall(b"d")
            except OSError:
                pass
            finally:
                client.close()

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/announce"
    try:
        data = write_tree(tmp_path / "data", {"trickle.bin": 20 * KiB})
        torrent = create(seeder, data / "trickle.bin", tmp_path / "trickle.torrent", url, piece_size=16 * KiB)
        config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv",
                              settings={"trackers": {"announce_jitter": "0", "announce_timeout": "3"}})
        server = start_seeder("--config", config, "--data", data, torrent)
        server.wait_for(rf"announce of trickle\.bin to {re.escape(url)} failed: .*no answer within 3 s", timeout=12)
        assert requested and time.monotonic() - requested[0] < 9
        server.assert_running()
        assert server.stop() == 0
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def watched_torrent_with_slow_stopped(seeder, start_seeder, tmp_path, name: str, stop_delay: float,
                                      stop_timeout: str):
    """A seeder watching a folder, one torrent dropped into it and announced, on a
    tracker that takes `stop_delay` seconds to answer a `stopped`. Returns the server,
    the tracker, the staged torrent and its path in the watch folder."""
    def slow_on_stop(query):
        if query.get("event") == ["stopped"]:
            time.sleep(stop_delay)
        return 200, bencode({"interval": 1800, "peers": b""})

    scripted = ScriptedTracker({"/slow/announce": slow_on_stop})
    data = write_tree(tmp_path / "srv" / "data", {name: 20 * KiB})
    staged = create(seeder, data / name, tmp_path / f"{name}.torrent", scripted.url("/slow/announce"),
                    piece_size=16 * KiB)
    config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv",
                          settings={"trackers": {"announce_jitter": "0", "stop_timeout": stop_timeout}})
    watched = tmp_path / "srv" / "torrents" / f"{name}.torrent"
    watched.parent.mkdir(parents=True)
    try:
        server = start_seeder("--config", config)
        server.wait_for(r"watching .*/srv/torrents for \.torrent files")
        shutil.copy(staged, watched)
        server.wait_for(rf"announced {re.escape(name)} to .*event=started", timeout=10)
    except BaseException:
        scripted.stop()
        raise
    return server, scripted, staged, watched


def wait_for_stopped(scripted):
    deadline = time.monotonic() + 5
    while not any(query.get("event") == ["stopped"] for _, query, _ in scripted.requests):
        assert time.monotonic() < deadline, "no `stopped` reached the tracker"
        time.sleep(0.05)


def test_a_torrent_added_again_while_its_stopped_is_out_is_announced_again(seeder, start_seeder, tmp_path):
    """Removed from the watch folder and put back before the tracker answered the
    `stopped`: the torrent seeds again, so it must be announced again."""
    server, scripted, staged, watched = watched_torrent_with_slow_stopped(
        seeder, start_seeder, tmp_path, "back.bin", stop_delay=8, stop_timeout="1")
    try:
        watched.unlink()
        server.wait_for(r"stopped seeding back\.bin", timeout=10)
        wait_for_stopped(scripted)
        shutil.copy(staged, watched)
        server.wait_for(r"(?:announced back\.bin to .*event=started[\s\S]*){2}", timeout=5)
        assert server.stop(timeout=10) == 0
    finally:
        scripted.stop()


def test_shutdown_lets_the_stopped_of_a_torrent_just_removed_finish(seeder, start_seeder, tmp_path):
    """A torrent taken out of the watch folder has its `stopped` out when SIGTERM comes:
    shutdown waits for it (within stop_timeout) instead of cancelling it."""
    server, scripted, _, watched = watched_torrent_with_slow_stopped(
        seeder, start_seeder, tmp_path, "gone.bin", stop_delay=1, stop_timeout="5")
    try:
        watched.unlink()
        wait_for_stopped(scripted)
        assert server.stop(timeout=10) == 0
        assert re.search(r"announced gone\.bin to .*event=stopped", server.log()), server.log()
    finally:
        scripted.stop()
