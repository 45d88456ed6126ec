"""Bad local state under `seeder run`: a data path that is a FIFO (the check must not
wait for a writer that never comes), and two torrents that name the same file (the one
that misses data must not download over the other's verified bytes)."""

import os
import shutil

from conftest import KiB, MiB, seeding_line, write_config, write_tree
from peers import TinyTracker, make_torrent
from test_download import lt_seed, settings


def test_a_fifo_where_a_data_file_should_be_does_not_hang_the_disk_threads(seeder, start_seeder, tmp_path):
    source = write_tree(tmp_path / "source", {"good.bin": 64 * KiB, "piped.bin": 64 * KiB})
    data = tmp_path / "srv" / "data"
    data.mkdir(parents=True)
    shutil.copy(source / "good.bin", data / "good.bin")
    os.mkfifo(data / "piped.bin")
    piped = make_torrent(source / "piped.bin", tmp_path / "piped.torrent", 16 * KiB)
    good = make_torrent(source / "good.bin", tmp_path / "good.torrent", 16 * KiB)
    config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", settings=settings())
    server = start_seeder("--config", config, piped, good)
    server.wait_for(r"cannot read the data of piped\.bin: .*piped\.bin: not a regular file", timeout=10)
    # The disk threads are free: the next torrent is checked and served.
    server.wait_for(r"seeding good\.bin \(4 of 4 pieces, 100%\)", timeout=10)
    server.assert_running()
    assert server.stop() == 0


def test_a_torrent_that_shares_a_file_with_another_does_not_download_over_it(seeder, start_seeder, tmp_path):
    ours = write_tree(tmp_path / "ours", {"shared.bin": 1 * MiB}, seed=1)
    theirs = write_tree(tmp_path / "theirs", {"shared.bin": 1 * MiB}, seed=2)
    data = tmp_path / "srv" / "data"
    data.mkdir(parents=True)
    shutil.copy(ours / "shared.bin", data / "shared.bin")
    original = (data / "shared.bin").read_bytes()
    seeded = make_torrent(ours / "shared.bin", tmp_path / "seeded.torrent", 256 * KiB)
    seed = None
    try:
        seed, _ = lt_seed("127.0.0.11", make_torrent(theirs / "shared.bin", tmp_path / "plain.torrent", 256 * KiB), theirs)
        with TinyTracker([("127.0.0.11", seed.listen_port())]) as tracker:
            other = make_torrent(theirs / "shared.bin", tmp_path / "other.torrent", 256 * KiB, tracker.url)
            config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", settings=settings())
            server = start_seeder("--config", config, seeded, other)
            server.wait_for(r"seeding shared\.bin \(4 of 4 pieces, 100%\)")
            server.wait_for(r"not downloading shared\.bin: its file .*/data/shared\.bin is also a file of shared\.bin", timeout=10)
            server.assert_running()
            assert server.stop() == 0
            assert "completed shared.bin" not in server.log()
            assert (data / "shared.bin").read_bytes() == original
    finally:
        seed = None


def test_a_download_creates_its_empty_files_and_gets_a_one_byte_last_piece(seeder, start_seeder, tmp_path):
    source = write_tree(tmp_path / "source" / "pack", {"a.bin": 64 * KiB, "empty.txt": 0, "sub/none": 0, "z.bin": 1})
    data = tmp_path / "srv" / "data"
    seed = None
    try:
        seed, _ = lt_seed("127.0.0.11", make_torrent(source, tmp_path / "plain.torrent", 16 * KiB), tmp_path / "source")
        with TinyTracker([("127.0.0.11", seed.listen_port())]) as tracker:
            torrent = make_torrent(source, tmp_path / "pack.torrent", 16 * KiB, tracker.url)
            config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv", settings=settings())
            server = start_seeder("--config", config, torrent)
            server.wait_for(r"completed pack", timeout=20)
            assert server.stop() == 0
        for relative in ("a.bin", "z.bin", "empty.txt", "sub/none"):
            assert (data / "pack" / relative).is_file(), relative
            assert (data / "pack" / relative).read_bytes() == (source / relative).read_bytes(), relative
        assert "complete" in seeder("verify", torrent, data).stdout.splitlines()[-1]
        assert "missing" not in seeder("verify", torrent, data).stdout
    finally:
        seed = None
