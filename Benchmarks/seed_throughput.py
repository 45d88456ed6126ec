#!/usr/bin/python3
"""Seeding throughput: our seeder, libtorrent's and Transmission's, side by side in one run.

For each seeder, a libtorrent leecher (its own process and loopback address, 4 MiB
socket buffers, TCP, plaintext) downloads a v1 torrent over loopback; the downloaded
file's SHA-1 is checked against the payload's. Reported per seeder: MiB/s (payload
bytes from the first byte received to the last), the seeder's CPU seconds per GiB sent
(utime + stime of the seeder process only, /proc/PID/stat, measured across the
download) and its peak RSS (VmHWM).

    swift build -c release --scratch-path .build-bench --product seeder
    /usr/bin/python3 Benchmarks/seed_throughput.py --runs 3
    /usr/bin/python3 Benchmarks/seed_throughput.py --leechers 4 --size 512M
    /usr/bin/python3 Benchmarks/seed_throughput.py --rss --torrents 1000 --peers 200

The machine is shared and noisy: every run measures ours and the references together
and alternates their order; compare ratios, not absolute numbers.
Every process started here is stopped by its PID.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Tests" / "Interop"))

import libtorrent as lt  # noqa: E402

import peers  # noqa: E402
from peers import KiB, MiB  # noqa: E402

GiB = 1 << 30
PYTHON = "/usr/bin/python3"


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)i?B?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text}")
    return int(match.group(1)) * {"": 1, "K": KiB, "M": MiB, "G": GiB}[match.group(2).upper()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen):
    for number, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            return
        os.kill(process.pid, number)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass


def wait_until(predicate, timeout: float, what: str, process: subprocess.Popen = None, log: Path = None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise SystemExit(f"{what}: process exited with {process.returncode}\n{tail}")
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise SystemExit(f"{what}: not within {timeout} s\n{tail}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- payloads


def make_payload(directory: Path, name: str, size: int, piece_length: int) -> tuple:
    """Random data (in the page cache, as for a hot seedbox file) and its torrent."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    digest = hashlib.sha1()
    with open(path, "wb") as out:
        written = 0
        while written < size:
            chunk = os.urandom(min(4 * MiB, size - written))
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    torrent = peers.make_torrent(path, directory / f"{name}.torrent", piece_length)
    return path, torrent, digest.hexdigest()


# --------------------------------------------------------------------------- seeders


class Seeder:
    kind = ""
    process: subprocess.Popen = None

    def cpu(self) -> float:
        return peers.cpu_seconds(self.process.pid)

    def peak_rss(self) -> int:
        return peers.proc_status(self.process.pid, "VmHWM")

    def stop(self):
        if self.process is not None:
            stop(self.process)


class OurSeeder(Seeder):
    kind = "seeder"

    def __init__(self, binary: Path, work: Path, payload: Path, torrent: Path, *, network: str = "", limits: str = ""):
        """`network` and `limits` are extra TOML lines for those sections."""
        self.port = free_port()
        base = work / "ours"
        shutil.rmtree(base, ignore_errors=True)
        (base / "torrents").mkdir(parents=True, exist_ok=True)
        config = base / "seeder.toml"
        config.write_text(
            f'[network]\nlisten_port = {self.port}\nbind_ipv4 = "127.0.0.1"\nbind_ipv6 = ""\n{network}\n'
            f'[storage]\ndata_dir = "{payload.parent}"\ntorrents_dir = "{base / "torrents"}"\n'
            f'state_dir = "{base / "state"}"\n\n[limits]\n{limits}\n[status]\nlisten = ""\n\n[log]\nlevel = "info"\n')
        self.log = base / "seeder.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([str(binary), "run", "--config", str(config), str(torrent)],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        name = re.escape(payload.name)
        wait_until(lambda: re.search(rf"seeding {name} \(", self.log.read_text(errors="replace")), 300,
                   "our seeder checking the data", self.process, self.log)


class LibtorrentSeeder(Seeder):
    kind = "libtorrent"

    def __init__(self, work: Path, payload: Path, torrent: Path):
        self.port = free_port()
        self.log = work / "lt-seed.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([PYTHON, __file__, "_lt_seed", str(torrent), str(payload.parent), str(self.port)],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: "ready" in self.log.read_text(errors="replace"), 300, "libtorrent seeder", self.process, self.log)


class TransmissionSeeder(Seeder):
    kind = "transmission"

    def __init__(self, work: Path, payload: Path, torrent: Path, *, utp: bool = False):
        self.port = free_port()
        self.rpc = free_port()
        config = work / "transmission"
        shutil.rmtree(config, ignore_errors=True)
        config.mkdir(parents=True)
        (config / "settings.json").write_text(json.dumps({
            "encryption": 0, "utp-enabled": utp, "dht-enabled": False, "lpd-enabled": False, "pex-enabled": False,
            "port-forwarding-enabled": False, "bind-address-ipv4": "127.0.0.1", "bind-address-ipv6": "::1",
            "peer-port": self.port, "rpc-port": self.rpc, "rpc-bind-address": "127.0.0.1",
            "rpc-authentication-required": False, "rpc-whitelist-enabled": False, "rpc-host-whitelist-enabled": False,
            "download-dir": str(payload.parent), "speed-limit-up-enabled": False, "alt-speed-enabled": False,
            "ratio-limit-enabled": False, "idle-seeding-limit-enabled": False, "upload-slots-per-torrent": 14,
            "message-level": 1, "cache-size-mb": 4,
        }))
        self.log = work / "transmission.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(["transmission-daemon", "-f", "-g", str(config)],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        remote = ["transmission-remote", f"127.0.0.1:{self.rpc}"]
        wait_until(lambda: subprocess.run([*remote, "-l"], capture_output=True).returncode == 0, 30,
                   "transmission-daemon RPC", self.process, self.log)
        subprocess.run([*remote, "-a", str(torrent), "-w", str(payload.parent)], check=True, capture_output=True)

        def seeding():
            info = subprocess.run([*remote, "-t", "all", "-i"], capture_output=True, text=True).stdout
            return "Percent Done: 100%" in info and re.search(r"State: (Seeding|Idle)", info)
        wait_until(seeding, 300, "transmission verifying", self.process, self.log)


# --------------------------------------------------------------------------- leechers


def run_leechers(seeder: Seeder, torrent: Path, work: Path, count: int, size: int, digest: str) -> dict:
    """Starts `count` leecher processes at once; returns aggregate MiB/s and the seeder's CPU."""
    leechers = []
    cpu_before = seeder.cpu()
    label = re.sub(r"[^A-Za-z0-9]+", "-", seeder.kind)
    for index in range(count):
        save = work / f"leech-{label}-{index}"
        shutil.rmtree(save, ignore_errors=True)
        log = work / f"leech-{label}-{index}.json"
        log.unlink(missing_ok=True)
        with open(log, "wb") as out:
            process = subprocess.Popen([PYTHON, __file__, "_leech", str(torrent), str(save), f"127.0.0.{11 + index}",
                                        str(seeder.port)], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        leechers.append((process, log, save))
    results = []
    try:
        for process, log, save in leechers:
            process.wait(900)
            text = log.read_text(errors="replace")
            if process.returncode != 0:
                raise SystemExit(f"leecher failed against {seeder.kind}:\n{text[-3000:]}")
            results.append(json.loads(text.strip().splitlines()[-1]))
    finally:
        for process, _, _ in leechers:
            stop(process)
    cpu = seeder.cpu() - cpu_before
    for process, log, save in leechers:
        got = peers.file_sha1(next(save.iterdir()))
        if got != digest:
            raise SystemExit(f"{seeder.kind}: downloaded file has sha1 {got}, expected {digest}")
        shutil.rmtree(save)
    first = min(result["first"] for result in results)
    last = max(result["done"] for result in results)
    total = size * count
    return {"mibs": total / MiB / (last - first), "cpu_per_gib": cpu / (total / GiB),
            "per_leecher": [round(result["rate"] / MiB, 1) for result in results]}


def leech_main(torrent: str, save: str, address: str, port: int):
    """A libtorrent leecher in its own process; prints one JSON line when done."""
    session = peers.lt_session(address)
    handle = peers.add_download(session, Path(torrent), Path(save))
    total = handle.torrent_file().total_size()
    first = None
    start = time.time()
    last_connect = 0.0
    while True:
        status = handle.status()
        now = time.time()
        if first is None and status.total_wanted_done > 0:
            first = now
            first_bytes = status.total_wanted_done
        if status.is_seeding:
            break
        ready = status.state in (lt.torrent_status.downloading, lt.torrent_status.finished)
        if ready and status.num_peers == 0 and now - last_connect > 2:
            handle.connect_peer(("127.0.0.1", port))
            last_connect = now
        if now - start > 900:
            print(f"timed out: progress {status.progress}", flush=True)
            sys.exit(1)
        session.pop_alerts()
        time.sleep(0.01)
    done = time.time()
    rate = (total - first_bytes) / (done - first) if done > first else 0
    print(json.dumps({"first": first, "done": done, "rate": rate}), flush=True)


def lt_seed_main(torrent: str, data: str, port: int):
    """libtorrent's seeder in its own process: default settings plus 4 MiB socket buffers."""
    session = peers.lt_session("127.0.0.1", port=port)
    handle = peers.add_download(session, Path(torrent), Path(data))
    while not handle.status().is_seeding:
        session.pop_alerts()
        time.sleep(0.05)
    print("ready", flush=True)
    while True:
        session.pop_alerts()
        time.sleep(0.5)


# --------------------------------------------------------------------------- RSS with many torrents


def rss_mode(args, work: Path):
    """Our seeder with many small torrents loaded and many connected peers."""
    base = work / "many"
    data = base / "data"
    torrents = base / "torrents"
    data.mkdir(parents=True, exist_ok=True)
    torrents.mkdir(parents=True, exist_ok=True)
    hashes = []
    started = time.monotonic()
    for index in range(args.torrents):
        path = data / f"small-{index:05d}.bin"
        path.write_bytes(os.urandom(args.torrent_size))
        torrent = peers.make_torrent(path, torrents / f"small-{index:05d}.torrent", 16 * KiB)
        hashes.append(peers.info_hash_bytes(torrent))
    print(f"made {args.torrents} torrents of {args.torrent_size} bytes in {time.monotonic() - started:.1f} s", flush=True)
    port = free_port()
    config = base / "seeder.toml"
    config.write_text(
        f'[network]\nlisten_port = {port}\nbind_ipv4 = "127.0.0.1"\nbind_ipv6 = ""\n\n'
        f'[storage]\ndata_dir = "{data}"\ntorrents_dir = "{torrents}"\nstate_dir = "{base / "state"}"\n\n'
        f'[limits]\nmax_connections = {max(500, args.peers + 50)}\n\n[log]\nlevel = "info"\n')
    log = base / "seeder.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(args.seeder_bin), "run", "--config", str(config)], stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT)
    sockets = []
    try:
        wait_until(lambda: log.read_text(errors="replace").count("seeding small-") >= args.torrents, 300,
                   "seeder checking the torrents", process, log)
        loaded_rss = peers.proc_status(process.pid, "VmRSS")
        for index in range(args.peers):
            peer = peers.RawPeer(port, f"127.0.2.{index // 4 + 1}")
            peer.handshake(hashes[index % len(hashes)])
            peer.send(peers.INTERESTED)
            sockets.append(peer)
        for peer in sockets:
            peer.wait_for(1)  # unchoked: the session is fully set up
        time.sleep(1)
        if process.poll() is not None:
            raise SystemExit(f"seeder exited with {process.returncode}")
        rss = peers.proc_status(process.pid, "VmRSS")
        peak = peers.proc_status(process.pid, "VmHWM")
        alive = sum(1 for peer in sockets if peer.sock.fileno() >= 0)
    finally:
        for peer in sockets:
            peer.close()
        stop(process)
    result = {"torrents": args.torrents, "peers": alive, "rss_loaded_mib": loaded_rss / MiB, "rss_mib": rss / MiB,
              "peak_mib": peak / MiB}
    print(f"seeder with {args.torrents} torrents: RSS {loaded_rss / MiB:.1f} MiB; with {alive} connected peers "
          f"RSS {rss / MiB:.1f} MiB, peak (VmHWM) {peak / MiB:.1f} MiB", flush=True)
    return result


# --------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=GiB, help="payload size (default 1G)")
    parser.add_argument("--piece-size", type=parse_size, default=1 * MiB)
    parser.add_argument("--transmission-size", type=parse_size, default=256 * MiB,
                        help="Transmission's own, smaller payload (it runs at about 12 MiB/s); 0 skips it")
    parser.add_argument("--seeders", default="seeder,libtorrent,transmission",
                        help="comma-separated: seeder, libtorrent, transmission, seeder@PATH (another build of ours)")
    parser.add_argument("--seeder-bin", type=Path, default=REPO / ".build-bench/release/seeder")
    parser.add_argument("--leechers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one, removed at the end)")
    parser.add_argument("--rss", action="store_true", help="measure our RSS with many torrents and peers instead")
    parser.add_argument("--torrents", type=int, default=1000)
    parser.add_argument("--torrent-size", type=parse_size, default=64 * KiB)
    parser.add_argument("--peers", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--nice", type=int, default=0,
                        help="run everything (seeders, leechers) at this nice value, e.g. -10 as root, so that a "
                             "busy shared machine disturbs every seeder less; the same for all of them")
    args = parser.parse_args()
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by every process started below
    assert os.access(args.seeder_bin, os.X_OK), f"{args.seeder_bin}: build it with " \
        "swift build -c release --scratch-path .build-bench --product seeder"

    work = args.work or Path(tempfile.mkdtemp(prefix="seed-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.rss:
            result = rss_mode(args, work)
            if args.json:
                args.json.write_text(json.dumps(result, indent=1))
            return
        kinds = [kind.strip() for kind in args.seeders.split(",") if kind.strip()]
        if args.transmission_size == 0 and "transmission" in kinds:
            kinds.remove("transmission")
        payload, torrent, digest = make_payload(work / "data", "payload.bin", args.size, args.piece_size)
        small = None
        if "transmission" in kinds:
            small = make_payload(work / "data-tr", "payload-tr.bin", min(args.size, args.transmission_size), args.piece_size)
        print(f"payload {args.size / MiB:.0f} MiB, {args.piece_size // KiB} KiB pieces, {args.leechers} leecher(s); "
              f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}", flush=True)
        rows = []
        for run in range(args.runs):
            order = kinds if run % 2 == 0 else list(reversed(kinds))
            for kind in order:
                path, tor, want, size = (payload, torrent, digest, args.size) if kind != "transmission" else (*small, min(args.size, args.transmission_size))
                if kind == "seeder":
                    seeder = OurSeeder(args.seeder_bin, work, path, tor)
                elif kind.startswith("seeder@"):
                    # Another build of ours (before/after comparisons in one run).
                    seeder = OurSeeder(Path(kind[len("seeder@"):]), work, path, tor)
                    seeder.kind = kind
                elif kind == "libtorrent":
                    seeder = LibtorrentSeeder(work, path, tor)
                elif kind == "transmission":
                    seeder = TransmissionSeeder(work, path, tor)
                else:
                    raise SystemExit(f"unknown seeder {kind}")
                try:
                    result = run_leechers(seeder, tor, work, args.leechers, size, want)
                    result["peak_rss_mib"] = seeder.peak_rss() / MiB
                finally:
                    seeder.stop()
                result.update(run=run + 1, seeder=kind, size_mib=size / MiB, load=os.getloadavg()[0])
                rows.append(result)
                print(f"run {run + 1} {kind:>12}: {result['mibs']:7.1f} MiB/s  {result['cpu_per_gib']:5.2f} CPU s/GiB  "
                      f"peak RSS {result['peak_rss_mib']:6.1f} MiB  per leecher {result['per_leecher']}  "
                      f"load {result['load']:.2f}", flush=True)
        summarize(rows, kinds)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def summarize(rows, kinds):
    print("\n| seeder | MiB/s (median) | runs | CPU s/GiB (median) | peak RSS MiB |")
    print("| --- | ---: | --- | ---: | ---: |")
    medians = {}
    for kind in kinds:
        mine = [row for row in rows if row["seeder"] == kind]
        rates = sorted(row["mibs"] for row in mine)
        cpus = sorted(row["cpu_per_gib"] for row in mine)
        medians[kind] = (rates[len(rates) // 2], cpus[len(cpus) // 2])
        print(f"| {kind} | {medians[kind][0]:.0f} | {', '.join(f'{rate:.0f}' for rate in (row['mibs'] for row in mine))} | "
              f"{medians[kind][1]:.2f} | {max(row['peak_rss_mib'] for row in mine):.0f} |")
    if "seeder" in medians and "libtorrent" in medians:
        runs = sorted(set(row["run"] for row in rows))
        ratios = []
        for run in runs:
            pair = {row["seeder"]: row for row in rows if row["run"] == run}
            if "seeder" in pair and "libtorrent" in pair:
                ratios.append((pair["seeder"]["mibs"] / pair["libtorrent"]["mibs"],
                               pair["seeder"]["cpu_per_gib"] / pair["libtorrent"]["cpu_per_gib"]))
        print("\nper run, seeder / libtorrent: " + "; ".join(f"throughput {a:.2f}x, CPU {b:.2f}x" for a, b in ratios))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_leech":
        leech_main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_lt_seed":
        lt_seed_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
