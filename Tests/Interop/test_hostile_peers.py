"""Hostile peers against `seeder run`, while a real libtorrent download from the same
seeder runs: every bad peer is disconnected within a bound, the download completes
with the right bytes, and the seeder's memory stays bounded."""

import os
import selectors
import socket
import struct
import time

import pytest

from conftest import KiB, MiB, free_port, seeding_line, write_config, write_tree
from peers import (INTERESTED, RawPeer, add_download, closed_within, info_hash_bytes, limit_download,
                   lt_session, make_torrent, message, proc_status, raw_connect, request, tree_digest,
                   wait_for_download)

PIECE = 256 * KiB
FULL_SIZE = 40 * MiB
PARTIAL_SIZE = 4 * MiB
MISSING_PIECE = 3
# A misbehaving peer must be gone within this many seconds of its offence.
DISCONNECT_BOUND = 5
# No handshake within 10 s (PeerServer.handshakeTimeout) is a disconnect; allow slack.
IDLE_BOUND = 20


@pytest.fixture
def hostile_setup(start_seeder, tmp_path):
    """A seeder with a complete torrent and one missing piece MISSING_PIECE (its bytes
    were overwritten after the torrent was made), and a libtorrent leecher at
    127.0.0.11 downloading the complete one slowly enough to overlap every attack."""
    base = tmp_path / "srv"
    data = base / "data"
    write_tree(data, {"full.bin": FULL_SIZE, "partial.bin": PARTIAL_SIZE})
    full = make_torrent(data / "full.bin", tmp_path / "full.torrent", PIECE)
    partial = make_torrent(data / "partial.bin", tmp_path / "partial.torrent", PIECE)
    with open(data / "partial.bin", "r+b") as handle:
        handle.seek(MISSING_PIECE * PIECE + 100)
        handle.write(b"corrupt")
    port = free_port()
    config = write_config(tmp_path / "seeder.toml", base=base, port=port)
    server = start_seeder("--config", config, full, partial)
    assert server.wait_for(seeding_line("full.bin"), timeout=60).group(1) == str(FULL_SIZE // PIECE)
    held, total, _ = server.wait_for(seeding_line("partial.bin"), timeout=60).groups()
    assert (int(held), int(total)) == (PARTIAL_SIZE // PIECE - 1, PARTIAL_SIZE // PIECE)
    return server, port, full, partial


def assert_closed(sock, bound=DISCONNECT_BOUND, what=""):
    try:
        closed_within(sock, bound)
    except AssertionError as error:
        raise AssertionError(f"{what}: {error}") from None
    finally:
        sock.close()


def unchoked_peer(port, info_hash, source):
    """A raw peer past the handshake that said interested and was unchoked. Returns
    (peer, bitfield bytes or None for have_all)."""
    peer = RawPeer(port, source)
    peer.handshake(info_hash)
    bitfield = None
    while True:
        kind, payload = peer.read_message()
        if kind == 5:
            bitfield = payload
            break
        if kind == 14:  # have_all
            break
    peer.send(INTERESTED)
    peer.wait_for(1)  # unchoke
    return peer, bitfield


def test_hostile_peers_during_a_download(hostile_setup, tmp_path):
    server, port, full, partial = hostile_setup
    full_hash, partial_hash = info_hash_bytes(full), info_hash_bytes(partial)
    pieces = FULL_SIZE // PIECE

    session = lt_session("127.0.0.11")
    # About 13 s at 3 MiB/s: long enough to overlap every attack below.
    limit_download(session, 3 * MiB)
    try:
        handle = add_download(session, full, tmp_path / "dl")
        handle.connect_peer(("127.0.0.1", port))
        deadline = time.monotonic() + 20
        while handle.status().total_wanted_done < 2 * MiB:
            assert time.monotonic() < deadline, "the download did not start"
            if handle.status().num_peers == 0:
                handle.connect_peer(("127.0.0.1", port))
            time.sleep(0.1)
        rss_before = proc_status(server.pid, "VmRSS")

        # 1. A message length of 4 GiB - 1 (the largest a 4-byte prefix holds).
        peer = RawPeer(port, "127.0.0.21")
        peer.handshake(full_hash)
        peer.send(b"\xff\xff\xff\xff\x07")
        assert_closed(peer.sock, what="4 GiB message length")

        # 2. A request that runs past the end of its piece.
        peer, _ = unchoked_peer(port, full_hash, "127.0.0.22")
        peer.send(request(0, PIECE - 8, 16 * KiB))
        assert_closed(peer.sock, what="request past the end of a piece")

        # 3. A request of 1 MiB.
        peer, _ = unchoked_peer(port, full_hash, "127.0.0.23")
        peer.send(request(1, 0, 1 * MiB))
        assert_closed(peer.sock, what="1 MiB request")

        # 4. A request for a piece the seeder does not hold; its bitfield says so.
        peer, bitfield = unchoked_peer(port, partial_hash, "127.0.0.24")
        assert bitfield is not None and len(bitfield) == (PARTIAL_SIZE // PIECE + 7) // 8
        assert not bitfield[MISSING_PIECE // 8] & (0x80 >> (MISSING_PIECE % 8)), "missing piece advertised"
        assert bitfield[0] & 0x80, "piece 0 not advertised"
        # A held piece is served...
        peer.send(request(0, 0, 16 * KiB))
        payload = peer.wait_for(7)
        assert struct.unpack(">II", payload[:8]) == (0, 0) and len(payload) == 8 + 16 * KiB
        assert payload[8:] == (tmp_path / "srv" / "data" / "partial.bin").read_bytes()[:16 * KiB]
        # ...the missing one is not.
        peer.send(request(MISSING_PIECE, 0, 16 * KiB))
        assert_closed(peer.sock, what="request for a piece not held")

        # 5. A bitfield of the wrong length.
        peer = RawPeer(port, "127.0.0.25")
        peer.handshake(full_hash)
        peer.send(message(5, b"\xff" * ((pieces + 7) // 8 + 3)))
        assert_closed(peer.sock, what="bitfield of the wrong length")

        # 6. Garbage instead of a handshake.
        sock = raw_connect(port, "127.0.0.26")
        sock.sendall(b"\x42" + os.urandom(67))
        assert_closed(sock, what="garbage handshake")

        # 7. A handshake for a torrent the seeder does not have.
        sock = raw_connect(port, "127.0.0.27")
        sock.sendall(b"\x13BitTorrent protocol" + bytes(8) + os.urandom(20) + b"-PY0001-" + os.urandom(12))
        assert_closed(sock, what="unknown info-hash")

        # Each was dropped for its own offence, and counted as a bad peer.
        reasons = {
            "127.0.0.21": "exceeds the limit",
            "127.0.0.22": "past the piece's",
            "127.0.0.23": "length 1048576 is outside",
            "127.0.0.24": f"piece {MISSING_PIECE} is not one we said we have",
            "127.0.0.25": "bitfield of",
            "127.0.0.26": "bad handshake",
            "127.0.0.27": "handshake for unknown torrent",
        }
        log = server.log()
        for source, reason in reasons.items():
            lines = [line for line in log.splitlines() if f"disconnected peer {source}:" in line]
            assert len(lines) == 1 and reason in lines[0], f"{source}: expected /{reason}/ in {lines}"

        # 8. 500 connections that never send a byte, 4 per source address (the
        # per-IP limit), while the download goes on.
        idle = []
        for index in range(500):
            idle.append(raw_connect(port, f"127.0.1.{index // 4 + 1}"))
        opened = time.monotonic()
        selector = selectors.DefaultSelector()
        for sock in idle:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        open_count = len(idle)
        while open_count:
            remaining = opened + IDLE_BOUND - time.monotonic()
            assert remaining > 0, f"{open_count} of 500 idle connections still open after {IDLE_BOUND} s"
            for key, _ in selector.select(min(remaining, 0.5)):
                try:
                    data = key.fileobj.recv(4096)
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                assert data == b"", f"the seeder sent {data!r} to a peer that never handshook"
                selector.unregister(key.fileobj)
                key.fileobj.close()
                open_count -= 1
            if handle.status().num_peers == 0 and not handle.status().is_seeding:
                handle.connect_peer(("127.0.0.1", port))
        idle_seconds = time.monotonic() - opened
        selector.close()

        still_downloading = not handle.status().is_seeding
        wait_for_download(session, handle, ("127.0.0.1", port), timeout=60)
        rss_after = proc_status(server.pid, "VmRSS")
        peak = proc_status(server.pid, "VmHWM")
    finally:
        del session

    assert tree_digest(tmp_path / "dl" / "full.bin") == tree_digest(tmp_path / "srv" / "data" / "full.bin")
    assert still_downloading or idle_seconds > 5, "the download did not overlap the attacks"
    print(f"RSS before {rss_before / MiB:.1f} MiB, after {rss_after / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB; "
          f"idle connections gone in {idle_seconds:.1f} s")
    # A 4 GiB length must not be buffered, 500 idle sockets cost a few KiB each.
    assert rss_after - rss_before < 32 * MiB, f"RSS grew from {rss_before} to {rss_after}"
    assert peak < 200 * MiB, f"peak RSS {peak}"
    server.assert_running()
    assert server.stop() == 0


def test_cancels_get_exactly_one_answer_each(hostile_setup, tmp_path):
    """Fast extension (BEP 6): every request gets exactly one piece or one reject, also
    when it is cancelled while its block is being read; the blocks sent are the file's."""
    server, port, full, _ = hostile_setup
    source = (tmp_path / "srv" / "data" / "full.bin").read_bytes()
    peer, _ = unchoked_peer(port, info_hash_bytes(full), "127.0.0.31")
    blocks = [(piece, offset) for piece in range(8) for offset in range(0, PIECE, 16 * KiB)]
    peer.send(b"".join(request(piece, offset, 16 * KiB) for piece, offset in blocks))
    cancelled = set(blocks[1::3])
    peer.send(b"".join(message(8, struct.pack(">III", piece, offset, 16 * KiB)) for piece, offset in sorted(cancelled)))
    answers = {}
    while len(answers) < len(blocks):
        kind, payload = peer.read_message(timeout=10)
        if kind == 7:
            piece, offset = struct.unpack(">II", payload[:8])
            assert (piece, offset) not in answers, f"second answer for {(piece, offset)}"
            start = piece * PIECE + offset
            assert payload[8:] == source[start:start + 16 * KiB], f"wrong bytes for {(piece, offset)}"
            answers[(piece, offset)] = "piece"
        elif kind == 16:
            piece, offset, length = struct.unpack(">III", payload)
            assert (piece, offset) not in answers, f"second answer for {(piece, offset)}"
            assert (piece, offset) in cancelled, f"reject for a request that was not cancelled: {(piece, offset)}"
            answers[(piece, offset)] = "reject"
    assert set(answers) == set(blocks)
    assert all(answers[block] == "piece" for block in blocks if block not in cancelled)
    # Nothing more arrives: no late piece for a cancelled block.
    peer.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        peer.read_message(timeout=0.5)
    peer.close()
    server.assert_running()


def test_peer_that_never_reads_cannot_grow_our_output(hostile_setup):
    """A choked peer on the fast extension earns a reject_request for every request it
    sends. One that floods requests and never reads must not make the seeder queue
    those rejects without bound: it is cut off once its unread output passes a bound."""
    server, port, full, _ = hostile_setup
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A tiny receive window, so the kernel holds little of what the seeder sends us.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * KiB)
    sock.bind(("127.0.0.41", 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    peer = RawPeer.__new__(RawPeer)
    peer.sock, peer.buffer = sock, b""
    peer.handshake(info_hash_bytes(full))
    while peer.read_message()[0] not in (5, 14):  # bitfield or have_all; never interested
        pass
    rss_before = proc_status(server.pid, "VmRSS")
    chunk = request(0, 0, 16 * KiB) * (1 * MiB // 17)
    sent = 0
    closed = False
    deadline = time.monotonic() + 60
    sock.settimeout(5)
    while sent < 96 * MiB and time.monotonic() < deadline:
        try:
            sock.sendall(chunk)
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        except socket.timeout:
            break  # the seeder stopped reading us: bounded too
        sent += len(chunk)
    growth = proc_status(server.pid, "VmRSS") - rss_before
    sock.close()
    print(f"sent {sent / MiB:.0f} MiB of requests; seeder RSS grew {growth / MiB:.1f} MiB; closed: {closed}")
    assert growth < 24 * MiB, f"RSS grew by {growth / MiB:.1f} MiB for {sent / MiB:.0f} MiB of unread rejects"
    server.wait_for(r"disconnected peer 127\.0\.0\.41:\d+: does not read", timeout=5)
    server.assert_running()
