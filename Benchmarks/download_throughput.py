#!/usr/bin/python3
"""Download throughput: our seeder downloading from one libtorrent seed, against a
libtorrent client downloading the same torrent from the same seed, in one run.

The seed is seed_throughput.py's libtorrent seeder (its own process, 127.0.0.1, 4 MiB
socket buffers, TCP, plaintext). Our seeder starts with an empty data directory and
learns the seed's address from a tiny HTTP tracker; the libtorrent client (its own
process on 127.0.0.11) is handed the seed's address. Both downloads are checked against
the payload's SHA-1. Reported per downloader: MiB/s (ours: from the "downloading" log
line to "completed"; libtorrent's: first payload byte to done) and the downloader's
CPU seconds per GiB received (utime + stime of that process only).

    swift build -c release --scratch-path .build-bench-dl --product seeder
    /usr/bin/python3 Benchmarks/download_throughput.py --size 1G --runs 2

The machine is shared and noisy: compare ratios within a run, not absolute numbers.
Every process started here is stopped by its PID.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Benchmarks"))
sys.path.insert(0, str(REPO / "Tests" / "Interop"))

import libtorrent as lt  # noqa: E402

import peers  # noqa: E402
from seed_throughput import GiB, MiB, PYTHON, LibtorrentSeeder, free_port, make_payload, parse_size, stop, wait_until  # noqa: E402


def ours(binary: Path, work: Path, torrent: Path, payload: Path, digest: str) -> dict:
    """Our seeder downloads into an empty directory; returns MiB/s and CPU s/GiB."""
    base = work / "ours"
    shutil.rmtree(base, ignore_errors=True)
    (base / "torrents").mkdir(parents=True)
    (base / "data").mkdir()
    config = base / "seeder.toml"
    config.write_text(
        f'[network]\nlisten_port = {free_port()}\nbind_ipv4 = "127.0.0.1"\nbind_ipv6 = ""\nutp = false\noutgoing = "tcp_only"\n\n'
        f'[storage]\ndata_dir = "{base / "data"}"\ntorrents_dir = "{base / "torrents"}"\nstate_dir = "{base / "state"}"\n\n'
        f'[trackers]\nannounce_jitter = 0\n\n[status]\nlisten = ""\n\n[log]\nlevel = "info"\n')
    log = base / "seeder.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(binary), "run", "--config", str(config), str(torrent)],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        text = lambda: log.read_text(errors="replace")  # noqa: E731
        wait_until(lambda: "downloading " in text(), 60, "our seeder starting", process, log)
        cpu_before = peers.cpu_seconds(process.pid)
        wait_until(lambda: "completed " in text(), 900, "our download", process, log)
        cpu = peers.cpu_seconds(process.pid) - cpu_before
        peak = peers.proc_status(process.pid, "VmHWM")
        stamps = {}
        for key in ("downloading", "completed"):
            match = re.search(rf"^(\S+) \S+\s+seeder: {key} ", text(), re.MULTILINE)
            stamps[key] = datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()
    finally:
        stop(process)
    got = peers.file_sha1(base / "data" / payload.name)
    if got != digest:
        raise SystemExit(f"our download has sha1 {got}, expected {digest}")
    size = payload.stat().st_size
    seconds = stamps["completed"] - stamps["downloading"]
    result = {"mibs": size / MiB / seconds, "cpu_per_gib": cpu / (size / GiB), "rss": peak}
    shutil.rmtree(base)
    return result


def libtorrent_client(work: Path, torrent: Path, seed_port: int, payload: Path, digest: str) -> dict:
    save = work / "lt-client"
    shutil.rmtree(save, ignore_errors=True)
    log = work / "lt-client.json"
    with open(log, "wb") as out:
        process = subprocess.Popen([PYTHON, __file__, "_leech", str(torrent), str(save), "127.0.0.11", str(seed_port)],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        process.wait(900)
    finally:
        stop(process)
    text = log.read_text(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"libtorrent client failed:\n{text[-3000:]}")
    result = json.loads(text.strip().splitlines()[-1])
    got = peers.file_sha1(save / payload.name)
    if got != digest:
        raise SystemExit(f"libtorrent's download has sha1 {got}, expected {digest}")
    shutil.rmtree(save)
    size = payload.stat().st_size
    return {"mibs": result["rate"] / MiB, "cpu_per_gib": result["cpu"] / (size / GiB), "rss": result["rss"]}


def leech_main(torrent: str, save: str, address: str, port: int):
    """A libtorrent client in its own process; prints one JSON line with its rate and
    the CPU it used from the first payload byte to the last."""
    session = peers.lt_session(address)
    handle = peers.add_download(session, Path(torrent), Path(save))
    total = handle.torrent_file().total_size()
    first = None
    last_connect = 0.0
    started = time.time()
    while True:
        status = handle.status()
        now = time.time()
        if first is None and status.total_wanted_done > 0:
            first, first_bytes, cpu_first = now, status.total_wanted_done, sum(os.times()[:2])
        if status.is_seeding:
            break
        ready = status.state in (lt.torrent_status.downloading, lt.torrent_status.finished)
        if ready and status.num_peers == 0 and now - last_connect > 2:
            handle.connect_peer(("127.0.0.1", port))
            last_connect = now
        if now - started > 900:
            print(f"timed out: progress {status.progress}", flush=True)
            sys.exit(1)
        session.pop_alerts()
        time.sleep(0.01)
    done = time.time()
    cpu = sum(os.times()[:2]) - cpu_first
    rate = (total - first_bytes) / (done - first) if done > first else 0
    print(json.dumps({"rate": rate, "cpu": cpu * total / max(1, total - first_bytes),
                      "rss": peers.proc_status(os.getpid(), "VmHWM")}), flush=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_leech":
        return leech_main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", type=Path, default=REPO / ".build-bench-dl" / "release" / "seeder")
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"))
    parser.add_argument("--piece-size", type=parse_size, default=parse_size("1M"))
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a new one under /tmp)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="download-bench-"))
    seed = None
    tracker = None
    try:
        payload, torrent, digest = make_payload(work / "payload", "payload.bin", args.size, args.piece_size)
        seed = LibtorrentSeeder(work, payload, torrent)
        tracker = peers.TinyTracker([("127.0.0.1", seed.port)])
        tracked = peers.make_torrent(payload, work / "tracked.torrent", args.piece_size, tracker.url)
        rows = []
        for run in range(args.runs):
            # Alternate the order: the page cache and the shared box favour whoever goes second.
            order = ["seeder", "libtorrent"] if run % 2 == 0 else ["libtorrent", "seeder"]
            for kind in order:
                if kind == "seeder":
                    result = ours(args.binary, work, tracked, payload, digest)
                else:
                    result = libtorrent_client(work, torrent, seed.port, payload, digest)
                rows.append((kind, result))
                print(f"run {run + 1} {kind:10s} {result['mibs']:8.1f} MiB/s {result['cpu_per_gib']:6.2f} CPU s/GiB "
                      f"peak RSS {result['rss'] / MiB:.0f} MiB", flush=True)
        for kind in ("seeder", "libtorrent"):
            mine = [r for k, r in rows if k == kind]
            print(f"median {kind:10s} {sorted(r['mibs'] for r in mine)[len(mine) // 2]:8.1f} MiB/s "
                  f"{sorted(r['cpu_per_gib'] for r in mine)[len(mine) // 2]:6.2f} CPU s/GiB")
    finally:
        if tracker is not None:
            tracker.close()
        if seed is not None:
            seed.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
