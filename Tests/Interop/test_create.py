"""`seeder create` makes the same torrent (same info-hash) as mktorrent and libtorrent,
and `seeder info` reads the info-hash libtorrent reads."""

import pytest

from conftest import (KiB, MiB, info_summary, libtorrent_create, libtorrent_info_hash, mktorrent_create,
                      write_tree)

PIECE_SIZES = [16 * KiB, 256 * KiB, 1 * MiB]
# mktorrent's smallest piece is 32 KiB (-l 15), so 16 KiB is compared with libtorrent only.
MKTORRENT_PIECE_SIZES = [32 * KiB, 256 * KiB, 1 * MiB]


def folder_sizes(piece):
    """A nested folder whose byte-wise path order is not the naive one: 'Sub' < 'Z.bin' <
    'a.bin' (upper case first), 'sub-file' < 'sub/deeper/...' ('-' is 0x2d, '/' 0x2f,
    whereas comparing by component puts the folder 'sub' first), and a non-ASCII name
    last. Sizes straddle piece boundaries and the total is not a multiple of a piece."""
    return {
        "Z.bin": 2 * piece + 777,
        "a.bin": 5000,
        "empty.txt": 0,
        "sub-file": 10,
        "sub/deeper/x.dat": piece + 1,
        "sub/deeper/y.dat": 3,
        "Sub/y.dat": piece // 2 - 3,
        "\u00e9t\u00e9.txt": 100,
    }


def make_source(tmp_path, kind, piece):
    if kind == "file":
        source = tmp_path / "src" / "payload.bin"
        write_tree(source.parent, {source.name: 3 * piece + 12345})
    else:
        source = write_tree(tmp_path / "src" / "payload", folder_sizes(piece))
    return source


@pytest.mark.parametrize("kind", ["file", "folder"])
@pytest.mark.parametrize("piece", PIECE_SIZES, ids=lambda size: f"{size // KiB}KiB")
def test_create_matches_libtorrent(seeder, tmp_path, kind, piece):
    source = make_source(tmp_path, kind, piece)
    ours = seeder.create(source, tmp_path / "seeder.torrent", piece)
    theirs = libtorrent_create(source, tmp_path / "libtorrent.torrent", piece)

    assert info_summary(ours) == info_summary(theirs)
    expected = libtorrent_info_hash(theirs)
    assert libtorrent_info_hash(ours) == expected
    assert seeder.info_hash(ours) == expected
    assert seeder.info_hash(theirs) == expected


@pytest.mark.parametrize("kind", ["file", "folder"])
@pytest.mark.parametrize("piece", MKTORRENT_PIECE_SIZES, ids=lambda size: f"{size // KiB}KiB")
def test_create_matches_mktorrent(seeder, tmp_path, kind, piece):
    source = make_source(tmp_path, kind, piece)
    ours = seeder.create(source, tmp_path / "seeder.torrent", piece)
    theirs = mktorrent_create(source, tmp_path / "mktorrent.torrent", piece)

    assert info_summary(ours) == info_summary(theirs)
    expected = libtorrent_info_hash(theirs)
    assert libtorrent_info_hash(ours) == expected
    assert seeder.info_hash(ours) == expected
    assert seeder.info_hash(theirs) == expected


def test_create_lists_files_in_bytewise_order_with_empty_file(seeder, tmp_path):
    source = make_source(tmp_path, "folder", 16 * KiB)
    info = info_summary(seeder.create(source, tmp_path / "seeder.torrent", 16 * KiB))
    paths = [b"/".join(entry[b"path"]).decode() for entry in info[b"files"]]
    assert paths == ["Sub/y.dat", "Z.bin", "a.bin", "empty.txt", "sub-file", "sub/deeper/x.dat",
                     "sub/deeper/y.dat", "\u00e9t\u00e9.txt"]
    assert {b"/".join(entry[b"path"]).decode(): entry[b"length"] for entry in info[b"files"]}["empty.txt"] == 0
    assert all(set(entry) == {b"length", b"path"} for entry in info[b"files"]), "no attr, no pad files"
