"""Torrents whose paths would leave the data directory, or whose piece count is wrong,
are refused with the field at fault by `seeder info`, `seeder verify` and `seeder run`,
and nothing is created outside the data directory."""

import pytest

from conftest import (KiB, multi_file_info, seeding_line, single_file_info, snapshot, write_config, write_torrent,
                      write_tree)


def entry(path, length=1000, **extra):
    return {"length": length, "path": path, **extra}


# Each case builds its info dictionary from the directory the data directory is in (the
# place an escape would land), and names the field and problem seeder must report.
CASES = [
    pytest.param(lambda outside: multi_file_info("evil", [entry(["ok.bin"]), entry(["..", "..", "escaped.bin"])]),
                 "info.files[1].path", 'path component ".." would leave the data directory', id="dotdot"),
    pytest.param(lambda outside: multi_file_info("evil", [entry(["sub", "..", "..", "..", "escaped.bin"])]),
                 "info.files[0].path", 'path component ".."', id="dotdot-after-folder"),
    pytest.param(lambda outside: multi_file_info("evil", [entry([".", "dot.bin"])]),
                 "info.files[0].path", 'path component "."', id="dot"),
    pytest.param(lambda outside: multi_file_info("evil", [entry([str(outside / "absolute.bin")])]),
                 "info.files[0].path", "contains '/'", id="absolute-component"),
    pytest.param(lambda outside: multi_file_info("evil", [entry(["ok.bin"]),
                                                          entry(["", *outside.parts[1:], "absolute.bin"])]),
                 "info.files[1].path", "empty path component", id="absolute-list"),
    pytest.param(lambda outside: multi_file_info("evil", [entry(["ok.bin"], **{"path.utf-8": ["..", "..", "escaped.bin"]})]),
                 "info.files[0].path.utf-8", 'path component ".."', id="dotdot-path-utf-8"),
    pytest.param(lambda outside: single_file_info("..", 1000),
                 "info.name", 'path component ".."', id="name-dotdot"),
    pytest.param(lambda outside: single_file_info("../escaped.bin", 1000),
                 "info.name", "contains '/'", id="name-relative-path"),
    pytest.param(lambda outside: single_file_info(str(outside / "absolute.bin"), 1000),
                 "info.name", "contains '/'", id="name-absolute"),
    pytest.param(lambda outside: single_file_info("pieces.bin", 100_000, 16 * KiB, pieces=8),
                 "info.pieces", "holds 8 piece hashes, but 100000 bytes in pieces of 16384 need 7", id="extra-piece"),
    pytest.param(lambda outside: multi_file_info("pieces", [entry(["a"], 40_000), entry(["b"], 9_000)], 16 * KiB, pieces=2),
                 "info.pieces", "holds 2 piece hashes, but 49000 bytes in pieces of 16384 need 3", id="missing-piece"),
]


@pytest.fixture
def outside(tmp_path):
    """tmp_path/outside holds the data directory and nothing else."""
    (tmp_path / "outside" / "data").mkdir(parents=True)
    return tmp_path / "outside"


def assert_refused(result, torrent, field, problem):
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"seeder: {torrent}: {field}: "), lines[0]
    assert problem in lines[0]


@pytest.mark.parametrize("build, field, problem", CASES)
def test_info_refuses(seeder, tmp_path, outside, build, field, problem):
    torrent = write_torrent(tmp_path / "hostile.torrent", build(outside))
    assert_refused(seeder("info", torrent), torrent, field, problem)


@pytest.mark.parametrize("build, field, problem", CASES)
def test_verify_refuses(seeder, tmp_path, outside, build, field, problem):
    torrent = write_torrent(tmp_path / "hostile.torrent", build(outside))
    before = snapshot(outside)
    assert_refused(seeder("verify", torrent, outside / "data"), torrent, field, problem)
    assert snapshot(outside) == before


def test_run_refuses_and_keeps_seeding(seeder, start_seeder, tmp_path, outside):
    data = outside / "data"
    write_tree(data, {"good.bin": 40 * KiB + 5})
    good = seeder.create(data / "good.bin", tmp_path / "good.torrent", 16 * KiB)
    hostile = []
    for number, case in enumerate(CASES):
        build, field, problem = case.values
        hostile.append((write_torrent(tmp_path / f"hostile-{number}-{case.id}.torrent", build(outside)), field, problem))
    config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv")
    before = snapshot(outside)

    server = start_seeder("--config", config, "--data", data, *[torrent for torrent, _, _ in hostile], good)
    held, total, _ = server.wait_for(seeding_line("good.bin")).groups()
    assert held == total == "3"
    log = server.log()
    for torrent, field, problem in hostile:
        lines = [line for line in log.splitlines() if f"file={torrent}" in line]
        assert len(lines) == 1, f"{torrent}:\n{log}"
        assert f"refused torrent: {field}: " in lines[0] and problem in lines[0], lines[0]
    server.assert_running()
    assert snapshot(outside) == before
    assert server.stop() == 0
    assert snapshot(outside) == before
