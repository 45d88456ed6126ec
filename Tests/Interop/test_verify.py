"""`seeder verify`: exit 0 on complete data, 1 with the exact pieces and files at fault
for a corrupted byte, a missing file or a truncated file."""

import re

import pytest

from conftest import KiB, layout, mktorrent_create, pieces_of, write_tree

PIECE = 32 * KiB  # mktorrent's smallest, so that its torrent can be verified too
SIZES = {
    "Z.bin": 2 * PIECE + 777,
    "a.bin": 5000,
    "empty.txt": 0,
    "sub-file": 10,
    "sub/deeper/x.dat": 3 * PIECE + 1,
    "sub/z.dat": PIECE // 2 - 3,
}
# relative path: (offset in the torrent, length)
LAYOUT = {relative: (offset, length) for relative, offset, length in layout(SIZES)}


@pytest.fixture
def torrent(seeder, tmp_path):
    """A folder torrent 'payload' saved under tmp_path/data; returns (torrent, data dir)."""
    data = tmp_path / "data"
    write_tree(data / "payload", SIZES)
    return seeder.create(data / "payload", tmp_path / "payload.torrent", PIECE), data


def parse_report(stdout):
    """{path relative to the torrent folder: (state, good, total)} and the corrupt pieces."""
    files = {}
    for state, good, total, path in re.findall(r"^(.+?)\s+(\d+)/(\d+) pieces  (.+)$", stdout, re.MULTILINE):
        files[path.split("/payload/", 1)[1]] = (state.strip(), int(good), int(total))
    corrupt = [int(piece) for piece in re.findall(r"^piece (\d+): hash mismatch$", stdout, re.MULTILINE)]
    return files, corrupt


def expected_files(data, bad_pieces):
    """What the per-file summary must say when `bad_pieces` are not good."""
    expected = {}
    for relative, (offset, length) in LAYOUT.items():
        pieces = pieces_of(offset, length, PIECE)
        good = len([piece for piece in pieces if piece not in bad_pieces])
        present = (data / "payload" / relative).exists()
        if good < len(pieces):
            state = "INCOMPLETE" if present else "MISSING"
        else:
            state = "ok" if present else "missing (empty file)"
        expected[relative] = (state, good, len(pieces))
    return expected


def test_verify_complete_data(seeder, tmp_path, torrent):
    path, data = torrent
    result = seeder("verify", path, data)
    assert result.returncode == 0, result.stdout + result.stderr
    files, corrupt = parse_report(result.stdout)
    assert files == expected_files(data, set())
    assert corrupt == []
    assert result.stdout.rstrip().endswith("complete")

    # A torrent of the same data made by mktorrent checks out too.
    other = mktorrent_create(data / "payload", tmp_path / "mktorrent.torrent", PIECE)
    assert seeder("verify", other, data).returncode == 0


@pytest.mark.parametrize("file, position", [
    ("Z.bin", 0),                       # the torrent's first byte: piece 0
    ("Z.bin", PIECE),                   # first byte of piece 1
    ("sub/deeper/x.dat", 2 * PIECE),    # inside a file that starts mid-piece
    ("sub-file", 9),                    # a piece shared by four files
    ("sub/z.dat", PIECE // 2 - 4),      # the torrent's last byte: the short last piece
])
def test_verify_one_corrupted_byte(seeder, torrent, file, position):
    path, data = torrent
    expected_piece = (LAYOUT[file][0] + position) // PIECE
    target = data / "payload" / file
    content = bytearray(target.read_bytes())
    content[position] ^= 0xFF
    target.write_bytes(content)

    result = seeder("verify", path, data)
    assert result.returncode == 1, result.stdout + result.stderr
    files, corrupt = parse_report(result.stdout)
    assert corrupt == [expected_piece]
    assert files == expected_files(data, {expected_piece})
    assert "INCOMPLETE: 1 corrupt, 0 missing, 0 unreadable" in result.stdout


def test_verify_missing_file(seeder, torrent):
    path, data = torrent
    (data / "payload" / "sub/deeper/x.dat").unlink()
    missing = set(pieces_of(*LAYOUT["sub/deeper/x.dat"], PIECE))

    result = seeder("verify", path, data)
    assert result.returncode == 1, result.stdout + result.stderr
    files, corrupt = parse_report(result.stdout)
    assert files["sub/deeper/x.dat"][0] == "MISSING"
    assert files == expected_files(data, missing)
    assert corrupt == []
    assert f"missing pieces: {min(missing)}-{max(missing)}" in result.stdout


def test_verify_missing_folder(seeder, torrent):
    path, data = torrent
    for name in SIZES:
        (data / "payload" / name).unlink()
    result = seeder("verify", path, data)
    assert result.returncode == 1
    files, corrupt = parse_report(result.stdout)
    assert files["empty.txt"][0] == "missing (empty file)"
    assert {state for name, (state, _, _) in files.items() if name != "empty.txt"} == {"MISSING"}
    assert corrupt == []


def test_verify_missing_empty_file_only(seeder, torrent):
    """Every piece is still good, so the exit status is 0, but the file is reported."""
    path, data = torrent
    (data / "payload" / "empty.txt").unlink()
    result = seeder("verify", path, data)
    assert result.returncode == 0, result.stdout + result.stderr
    files, _ = parse_report(result.stdout)
    assert files == expected_files(data, set())
    assert files["empty.txt"] == ("missing (empty file)", 0, 0)


@pytest.mark.parametrize("keep", [0, 1, PIECE + 100])
def test_verify_truncated_file(seeder, torrent, keep):
    path, data = torrent
    offset, length = LAYOUT["sub/deeper/x.dat"]
    target = data / "payload" / "sub/deeper/x.dat"
    target.write_bytes(target.read_bytes()[:keep])
    # Every piece holding a byte past the new end lacks data.
    missing = set(pieces_of(offset + keep, length - keep, PIECE))

    result = seeder("verify", path, data)
    assert result.returncode == 1, result.stdout + result.stderr
    files, corrupt = parse_report(result.stdout)
    assert files["sub/deeper/x.dat"][0] == "INCOMPLETE"
    assert files == expected_files(data, missing)
    assert corrupt == []
    assert f"missing pieces: {min(missing)}-{max(missing)}" in result.stdout
    assert f"INCOMPLETE: 0 corrupt, {len(missing)} missing, 0 unreadable" in result.stdout


def test_verify_single_file_torrent(seeder, tmp_path):
    data = write_tree(tmp_path / "data", {"disk.img": 5 * PIECE + 3})
    path = seeder.create(data / "disk.img", tmp_path / "disk.torrent", PIECE)
    assert seeder("verify", path, data).returncode == 0

    content = bytearray((data / "disk.img").read_bytes())
    content[4 * PIECE + 17] ^= 1
    (data / "disk.img").write_bytes(content)
    result = seeder("verify", path, data)
    assert result.returncode == 1
    assert re.findall(r"^piece (\d+): hash mismatch$", result.stdout, re.MULTILINE) == ["4"]
