"""Resume data: a restart trusts files whose size and mtime are unchanged, hashes only
the pieces of files that changed, and survives damaged resume data."""

import os
import re

from conftest import MiB, seeding_line, write_config, write_tree


def start_and_check(start_seeder, config, torrent, name):
    server = start_seeder("--config", config, torrent)
    line = server.wait_for(seeding_line(name) + r".*", timeout=120).group(0)
    assert server.stop() == 0
    hashed = int(re.search(r"hashed_pieces=(\d+)", line).group(1))
    seconds = float(re.search(r"checked_in=([\d.]+)s", line).group(1))
    held, total = re.search(seeding_line(name), line).groups()[:2]
    return server, hashed, seconds, int(held), int(total)


def test_restart_of_a_1_gib_torrent_hashes_only_what_changed(seeder, start_seeder, tmp_path):
    files = {f"mirror/part{index}.iso": 256 * MiB for index in range(4)}
    data = write_tree(tmp_path / "data", files)
    torrent = tmp_path / "mirror.torrent"
    seeder.checked("create", data / "mirror", "-a", "http://127.0.0.1:9/announce", "--piece-size", "1MiB", "-o", torrent)
    config = write_config(tmp_path / "seeder.toml", base=tmp_path / "srv",
                          settings={"storage": {"data_dir": f'"{data}"'}})

    _, hashed, _, held, total = start_and_check(start_seeder, config, torrent, "mirror")
    assert hashed == total == held == 1024
    assert (tmp_path / "srv" / "state" / "resume").is_dir()

    # Unchanged files: nothing is hashed, and start-up takes well under a second.
    _, hashed, seconds, held, _ = start_and_check(start_seeder, config, torrent, "mirror")
    assert hashed == 0 and held == 1024
    assert seconds < 0.5, f"start-up with resume data took {seconds} s"

    # A touched file: only its 256 pieces are hashed again.
    os.utime(data / "mirror" / "part2.iso")
    server, hashed, _, held, _ = start_and_check(start_seeder, config, torrent, "mirror")
    assert hashed == 256 and held == 1024
    assert "1 files changed since the resume data" in server.log()

    # A file cut short: its pieces are hashed, the ones it no longer holds are missing.
    with open(data / "mirror" / "part1.iso", "r+b") as handle:
        handle.truncate(200 * MiB)
    _, hashed, _, held, _ = start_and_check(start_seeder, config, torrent, "mirror")
    assert hashed == 256 and held == 1024 - 56

    # Damaged resume data is reported and everything is hashed again.
    [resume] = (tmp_path / "srv" / "state" / "resume").iterdir()
    resume.write_bytes(b"\x28\xb5\x2f\xfd garbage")
    server, hashed, _, held, _ = start_and_check(start_seeder, config, torrent, "mirror")
    assert hashed == 1024 and held == 1024 - 56
    assert "resume data" in server.log() and "unusable" in server.log()
