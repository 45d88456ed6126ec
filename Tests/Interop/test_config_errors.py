"""A bad config file stops `seeder run` before it starts: exit 2 and one line
`seeder: FILE: KEY: message` naming the key."""

import pytest

from conftest import write_config

# (section, key, TOML value) added to an otherwise good config, the key seeder must
# name, and part of its message.
CASES = [
    pytest.param("network", "listen_prot", "7000", "network.listen_prot",
                 "unknown key (did you mean `listen_port`?)", id="typo"),
    pytest.param("netwrok", "listen_port", "7000", "netwrok", "unknown key", id="typo-table"),
    pytest.param("storage", "data_dirs", "'/srv'", "storage.data_dirs",
                 "unknown key (did you mean `data_dir`?)", id="typo-storage"),
    pytest.param("network", "listen_port", '"7000"', "network.listen_port",
                 "expected an integer from 1 to 65535, found a string", id="string-for-port"),
    pytest.param("storage", "disk_threads", "'4'", "storage.disk_threads",
                 "expected an integer from 0 to 64, found a string", id="string-for-threads"),
    pytest.param("network", "listen_port", "70000", "network.listen_port",
                 "70000 is out of range: expected 1 to 65535", id="port-too-big"),
    pytest.param("network", "listen_port", "0", "network.listen_port",
                 "0 is out of range: expected 1 to 65535", id="port-zero"),
    pytest.param("network", "listen_port", "-1", "network.listen_port",
                 "-1 is out of range: expected 1 to 65535", id="port-negative"),
    pytest.param("network", "bind_ipv4", "'::1'", "network.bind_ipv4", "expected an IPv4 address",
                 id="ipv6-for-ipv4"),
    pytest.param("storage", "data_dir", "5", "storage.data_dir", "expected a string", id="number-for-path"),
    pytest.param("storage", "max_open_files", "4", "storage.max_open_files", "out of range", id="too-few-files"),
    pytest.param("limits", "upload_limit", "'fast'", "limits.upload_limit", '"fast" is not a rate', id="bad-rate"),
    pytest.param("limits", "max_connections", "0", "limits.max_connections", "out of range", id="no-connections"),
    pytest.param("log", "level", "'verbose'", "log.level", 'found "verbose"', id="log-level"),
    pytest.param("[[torrent]]", "data_dir", "'/srv'", "torrent[0].file", "missing", id="torrent-without-file"),
]


@pytest.mark.parametrize("section, key, value, named, message", CASES)
def test_config_error(start_seeder, tmp_path, section, key, value, named, message):
    base = tmp_path / "srv"
    config = write_config(tmp_path / "seeder.toml", base=base, settings={section: {key: value}})
    server = start_seeder("--config", config)
    assert server.process.wait(10) == 2, server.log()
    assert server.stdout() == ""
    lines = server.log().splitlines()
    assert len(lines) == 1, server.log()
    assert lines[0].startswith(f"seeder: {config}: {named}: "), lines[0]
    assert message in lines[0]
    # It stopped before creating any of its directories.
    assert not base.exists()


def test_good_config_is_accepted(start_seeder, tmp_path):
    """The config the cases above start from is itself fine."""
    base = tmp_path / "srv"
    server = start_seeder("--config", write_config(tmp_path / "seeder.toml", base=base))
    server.wait_for(r"no torrents loaded")
    server.assert_running()
    assert server.stop() == 0
    assert {path.name for path in base.iterdir()} == {"data", "torrents", "state"}
