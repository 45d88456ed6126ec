"""Shared helpers for the interop tests: the seeder binary, a bencode codec, data trees,
torrents made by mktorrent and libtorrent, and `seeder run` processes that are always
stopped by PID.

Run with Debian's python (python3-libtorrent belongs to it):
    /usr/bin/python3 -m pytest Tests/Interop
SEEDER_BIN overrides the binary (default: .build/debug/seeder under the repo root).
"""

import hashlib
import os
import random
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import libtorrent as lt
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
KiB = 1 << 10
MiB = 1 << 20
# Nothing listens here: the tests only need a well-formed loopback URL in the torrents.
TRACKER = "http://127.0.0.1:6969/announce"
COMMAND_TIMEOUT = 60


# --------------------------------------------------------------------------- bencode


def bencode(value) -> bytes:
    """Encodes ints, str/bytes, lists and dicts (keys sorted as raw bytes, as BEP 3 asks)."""
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, (list, tuple)):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    if isinstance(value, dict):
        items = sorted((key.encode() if isinstance(key, str) else key, item) for key, item in value.items())
        return b"d" + b"".join(bencode(key) + bencode(item) for key, item in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes):
    """Decodes a whole bencoded value; strings stay bytes, dict keys are bytes."""

    def parse(index):
        lead = data[index:index + 1]
        if lead == b"i":
            end = data.index(b"e", index)
            return int(data[index + 1:end]), end + 1
        if lead == b"l":
            items, index = [], index + 1
            while data[index:index + 1] != b"e":
                item, index = parse(index)
                items.append(item)
            return items, index + 1
        if lead == b"d":
            result, index = {}, index + 1
            while data[index:index + 1] != b"e":
                key, index = parse(index)
                result[key], index = parse(index)
            return result, index + 1
        colon = data.index(b":", index)
        start = colon + 1
        end = start + int(data[index:colon])
        return data[start:end], end

    value, end = parse(0)
    assert end == len(data), "trailing bytes after the bencoded value"
    return value


def read_info(torrent: Path) -> dict:
    return bdecode(Path(torrent).read_bytes())[b"info"]


def info_summary(torrent: Path) -> dict:
    """The info dictionary with `pieces` replaced by its count and digest, so that a
    mismatch shows up as a readable pytest diff."""
    info = dict(read_info(torrent))
    pieces = info.pop(b"pieces")
    info[b"pieces"] = f"{len(pieces) // 20} hashes, sha1 {hashlib.sha1(pieces).hexdigest()}"
    return info


def write_torrent(path: Path, info: dict) -> Path:
    path.write_bytes(bencode({"announce": TRACKER, "info": info}))
    return path


def piece_count(total: int, piece_length: int) -> int:
    return -(-total // piece_length)


def single_file_info(name, length, piece_length=16 * KiB, pieces=None) -> dict:
    """A plain single-file info dictionary; `pieces` (a count) defaults to the right one.
    The hashes are zeros: these torrents test parsing, not data."""
    count = piece_count(length, piece_length) if pieces is None else pieces
    return {"name": name, "piece length": piece_length, "length": length, "pieces": b"\0" * 20 * count}


def multi_file_info(name, files, piece_length=16 * KiB, pieces=None) -> dict:
    """`files` is a list of dicts as they go in `info.files` (path lists as given, so a
    test can put anything in them)."""
    total = sum(entry["length"] for entry in files)
    count = piece_count(total, piece_length) if pieces is None else pieces
    return {"name": name, "piece length": piece_length, "files": files, "pieces": b"\0" * 20 * count}


# --------------------------------------------------------------------------- data trees


def write_tree(root: Path, sizes: dict, seed: int = 1) -> Path:
    """Writes files of pseudo-random bytes; `sizes` maps a relative path to a length."""
    rng = random.Random(seed)
    for relative, size in sizes.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            for start in range(0, size, 64 * MiB):  # randbytes refuses sizes past 2^28
                handle.write(rng.randbytes(min(64 * MiB, size - start)))
    return root


def torrent_order(paths):
    """The order a v1 torrent lists files in: byte-wise order of the whole relative path
    string, as mktorrent sorts them ('sub-file' before 'sub/x', 'Z' before 'a')."""
    return sorted(paths, key=lambda path: path.encode())


def files_in_torrent_order(root: Path) -> list:
    """(relative path, size) of every file under `root`, in torrent order."""
    sizes = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            sizes[path.relative_to(root).as_posix()] = path.stat().st_size
    return [(relative, sizes[relative]) for relative in torrent_order(sizes)]


def layout(sizes: dict) -> list:
    """(relative path, offset, length) of each file of a folder torrent made from a tree
    written by write_tree(root, sizes)."""
    entries, offset = [], 0
    for relative in torrent_order(sizes):
        entries.append((relative, offset, sizes[relative]))
        offset += sizes[relative]
    return entries


def pieces_of(offset: int, length: int, piece_length: int) -> range:
    if length == 0:
        return range(0)
    return range(offset // piece_length, (offset + length - 1) // piece_length + 1)


def snapshot(root: Path) -> dict:
    """Every path under `root` (and root itself) with its type, size and mtime: equal
    snapshots mean nothing was created, removed or written."""
    state = {}
    for directory, dirs, names in os.walk(root):
        for name in [""] + dirs + names:
            path = Path(directory, name)
            info = path.lstat()
            state[path.relative_to(root).as_posix()] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return state


# --------------------------------------------------------------------------- other creators


def mktorrent_create(source: Path, output: Path, piece_length: int) -> Path:
    """mktorrent takes the piece size as its log2 (-l), from 15 (32 KiB) to 28."""
    log2 = piece_length.bit_length() - 1
    assert 1 << log2 == piece_length
    subprocess.run(["mktorrent", "-l", str(log2), "-a", TRACKER, "-o", str(output), str(source)],
                   check=True, capture_output=True, timeout=COMMAND_TIMEOUT)
    return output


def libtorrent_create(source: Path, output: Path, piece_length: int) -> Path:
    """A plain v1 torrent from libtorrent 2.0.

    What libtorrent does by default: `create_torrent` makes a hybrid v1+v2 torrent, and
    hybrid implies `canonical_files`, which re-sorts the files by path *component*
    (sub/deeper/x.dat before sub-file) and inserts pad files (`.pad/N`, attr "p") after
    every file so that files start on piece boundaries. That is a different info
    dictionary from mktorrent's, not a libtorrent bug. With `v1_only` (and without
    `canonical_files`) it keeps the files in the order they were added, adds no pad
    files and no `attr` keys, and lists empty files as `length 0` entries, exactly like
    mktorrent. So the files are added in byte-wise order of their path strings.
    """
    files = lt.file_storage()
    if source.is_file():
        files.add_file(source.name, source.stat().st_size)
    else:
        for relative, size in files_in_torrent_order(source):
            files.add_file(f"{source.name}/{relative}", size)
    torrent = lt.create_torrent(files, piece_length, flags=lt.create_torrent.v1_only)
    torrent.add_tracker(TRACKER)
    lt.set_piece_hashes(torrent, str(source.parent))
    output.write_bytes(lt.bencode(torrent.generate()))
    return output


def libtorrent_info_hash(torrent: Path) -> str:
    hashes = lt.torrent_info(str(torrent)).info_hashes()
    assert not hashes.has_v2(), "expected a v1 torrent"
    return str(hashes.v1)


# --------------------------------------------------------------------------- seeder CLI


class SeederCLI:
    def __init__(self, binary: str):
        self.binary = binary

    def __call__(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, *map(str, args)], capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)

    def checked(self, *args) -> subprocess.CompletedProcess:
        result = self(*args)
        assert result.returncode == 0, f"seeder {args}: exit {result.returncode}\n{result.stderr}"
        return result

    def create(self, source: Path, output: Path, piece_length: int, *extra) -> Path:
        self.checked("create", source, "-a", TRACKER, "--piece-size", piece_length, "-o", output, *extra)
        return output

    def info_hash(self, torrent: Path) -> str:
        output = self.checked("info", torrent).stdout
        match = re.search(r"^info-hash:\s+([0-9a-f]{40})$", output, re.MULTILINE)
        assert match, f"no info-hash line in:\n{output}"
        return match.group(1)


@pytest.fixture(scope="session")
def seeder_bin() -> str:
    binary = Path(os.environ.get("SEEDER_BIN", REPO_ROOT / ".build/debug/seeder"))
    if not binary.is_absolute():
        binary = REPO_ROOT / binary
    assert os.access(binary, os.X_OK), f"{binary} is missing: build it (swift build) or set SEEDER_BIN"
    return str(binary)


@pytest.fixture(scope="session")
def seeder(seeder_bin) -> SeederCLI:
    return SeederCLI(seeder_bin)


# --------------------------------------------------------------------------- seeder run


def free_port() -> int:
    """A port that is free for both TCP and UDP on loopback right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def write_config(path: Path, *, base: Path, port: int = None, settings: dict = None) -> Path:
    """A config that keeps the server on loopback and every directory under `base`.
    `settings` adds or replaces lines: {section: {key: TOML value}}; a section named
    like "[[torrent]]" is written as that header."""
    sections = {
        "network": {"listen_port": str(port or free_port()), "bind_ipv4": '"127.0.0.1"', "bind_ipv6": '"::1"'},
        "storage": {"data_dir": f'"{base / "data"}"', "torrents_dir": f'"{base / "torrents"}"',
                    "state_dir": f'"{base / "state"}"', "disk_threads": "2"},
        "log": {"level": '"info"'},
    }
    for section, values in (settings or {}).items():
        sections.setdefault(section, {}).update(values)
    text = ""
    for section, values in sections.items():
        text += (section if section.startswith("[") else f"[{section}]") + "\n"
        text += "".join(f"{key} = {value}\n" for key, value in values.items()) + "\n"
    path.write_text(text)
    return path


class SeederServer:
    """One `seeder run` process; its stderr (the log) and stdout go to files."""

    def __init__(self, argv, log_path: Path, env):
        self.log_path = log_path
        self.stdout_path = log_path.with_suffix(".stdout")
        with open(log_path, "wb") as log, open(self.stdout_path, "wb") as stdout:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=log, env=env)
        self.pid = self.process.pid

    def log(self) -> str:
        """Everything written to stderr so far."""
        return self.log_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 15) -> re.Match:
        """Waits for a log line matching the regex; fails early if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log(), re.MULTILINE)
            if match:
                return match
            if self.process.poll() is not None:
                pytest.fail(f"seeder exited with {self.process.returncode} before logging /{pattern}/:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no log line /{pattern}/ within {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def assert_running(self):
        assert self.process.poll() is None, f"seeder exited with {self.process.returncode}:\n{self.log()}"

    def stop(self, number=signal.SIGTERM, timeout: float = 10) -> int:
        """Sends the signal to the PID and returns the exit status."""
        if self.process.poll() is None:
            os.kill(self.pid, number)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.terminate()
            pytest.fail(f"seeder did not exit within {timeout} s of {signal.Signals(number).name}:\n{self.log()}")

    def terminate(self):
        """SIGTERM, then SIGKILL if it is still there 5 s later; always reaped."""
        for number, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            if self.process.poll() is not None:
                return
            os.kill(self.pid, number)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def start_seeder(seeder_bin, tmp_path):
    """start_seeder(*args, prefix=[], extra_env={}) starts `seeder run ARGS` with HOME in
    tmp_path (optionally behind a wrapper such as unshare that execs it, keeping the PID,
    and with more environment variables); every
    server still running at the end of the test is terminated by its PID and reaped."""
    servers = []
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "XDG_DATA_HOME"}
    env["HOME"] = str(home)

    def start(*args, prefix=(), extra_env=None):
        log_path = tmp_path / f"seeder-run-{len(servers)}.log"
        server = SeederServer([*prefix, seeder_bin, "run", *map(str, args)], log_path, {**env, **(extra_env or {})})
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.terminate()


def seeding_line(name: str) -> str:
    """The regex of the line logged once a torrent's data has been checked: "seeding" when
    it is complete, "checked" when the rest is about to be downloaded."""
    return rf"(?:seeding|checked) {re.escape(name)} \((\d+) of (\d+) pieces, (\d+)%\)"
