"""`seeder run`: checks and seeds torrents named on the command line or found in the
torrents directory, logs and skips bad ones, and exits 0 on SIGTERM or SIGINT."""

import os
import random
import signal
import time

import pytest

from conftest import KiB, free_port, seeding_line, write_config, write_tree


def default_root_sandbox(tmp_path):
    """How to run seeder with its built-in default directories kept inside tmp_path.

    Without --config the server creates its torrents and state directories under the
    default root: /var/lib/seeder for root, else ~/.local/share/seeder (HOME is in
    tmp_path, see start_seeder). As root, the server runs in its own mount and network
    namespaces with tmp_path/var-lib bound over /var/lib (only loopback exists there).
    Returns the command prefix (it execs seeder, so the PID stays seeder's) and the
    default root as seen from here."""
    if os.geteuid() != 0:
        return [], tmp_path / "home" / ".local/share/seeder"
    var_lib = tmp_path / "var-lib"
    var_lib.mkdir()
    script = 'mount --bind "$0" /var/lib && ip link set lo up && exec "$@"'
    return ["unshare", "--mount", "--net", "--propagation", "private", "--", "sh", "-c", script, str(var_lib)], \
        var_lib / "seeder"


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=lambda number: number.name)
def test_run_without_config(seeder, start_seeder, tmp_path, number):
    data = write_tree(tmp_path / "data", {"x/a.bin": 70 * KiB, "x/b/c.bin": 3, "x/empty": 0})
    torrent = seeder.create(data / "x", tmp_path / "x.torrent", 16 * KiB)
    port = free_port()
    prefix, default_root = default_root_sandbox(tmp_path)

    server = start_seeder("--port", port, "--data", data, torrent, prefix=prefix)
    held, total, share = server.wait_for(seeding_line("x"), timeout=10).groups()
    assert (held, total, share) == ("5", "5", "100")
    log = server.log()
    assert 'config="embedded default config"' in log
    assert f"port={port}" in log
    assert f"data_dir={data}" in log
    server.assert_running()

    assert server.stop(number) == 0
    assert f"received {number.name}, stopping" in server.log()
    assert server.log().splitlines()[-1].endswith("stopped")
    # The embedded defaults were used for what the flags did not replace.
    assert sorted(path.name for path in default_root.iterdir()) == ["state", "torrents"]


def test_run_torrents_dir_with_good_and_garbage(seeder, start_seeder, tmp_path):
    base = tmp_path / "srv"
    config = write_config(tmp_path / "seeder.toml", base=base)
    write_tree(base / "data", {"good/one.bin": 50 * KiB, "good/two.bin": 1})
    torrents = base / "torrents"
    torrents.mkdir()
    good = seeder.create(base / "data" / "good", torrents / "good.torrent", 16 * KiB)
    bad = {
        "garbage.torrent": random.Random(7).randbytes(3000),
        "empty.torrent": b"",
        "truncated.torrent": good.read_bytes()[:-30],
        "list.torrent": b"li1ee",
    }
    for name, content in bad.items():
        (torrents / name).write_bytes(content)
    (torrents / "notes.txt").write_bytes(b"not a torrent and not named like one")

    server = start_seeder("--config", config)
    held, total, _ = server.wait_for(seeding_line("good")).groups()
    assert held == total == "4"
    log = server.log()
    for name in bad:
        lines = [line for line in log.splitlines() if f"file={torrents / name}" in line]
        assert len(lines) == 1 and "refused torrent: " in lines[0], f"{name}:\n{log}"
    assert "notes.txt" not in log
    time.sleep(0.5)
    server.assert_running()
    assert server.stop() == 0
