#!/usr/bin/python3
"""Upload-limit accuracy: ours, libtorrent's and Transmission's seeders with the same
limit, side by side in one run.

For each limit and seeder, one libtorrent leecher (its own process and loopback address)
downloads and samples its payload total every 50 ms for `--seconds` from the first
payload byte. Reported: the average against the limit, and the worst one-second window.

    swift build -c release --scratch-path .build-bench --product seeder
    /usr/bin/python3 Benchmarks/limit_accuracy.py --limits 1,5,20 --seconds 20

libtorrent exempts loopback peers from its limits unless every address is put in the
global peer class, which the libtorrent seeder here does. Transmission's limits are in
kB/s (k = 1000): the limit is rounded to the nearest kB/s.
Every process started here is stopped by its PID.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import seed_throughput as st  # noqa: E402
from seed_throughput import MiB, PYTHON, free_port, make_payload, stop, wait_until  # noqa: E402

import libtorrent as lt  # noqa: E402
import peers  # noqa: E402


def limited_our_seeder(binary: Path, work: Path, payload: Path, torrent: Path, limit: int, transport: str):
    outgoing = "utp_only" if transport == "utp" else "tcp_only"
    return st.OurSeeder(binary, work, payload, torrent, network=f'outgoing = "{outgoing}"\n',
                        limits=f"upload_limit = {limit}\n")


class LimitedLibtorrentSeeder(st.Seeder):
    kind = "libtorrent"

    def __init__(self, work: Path, payload: Path, torrent: Path, limit: int, transport: str):
        self.port = free_port()
        self.log = work / "lt-seed.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([PYTHON, __file__, "_lt_seed", str(torrent), str(payload.parent), str(self.port),
                                             str(limit), transport],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: "ready" in self.log.read_text(errors="replace"), 300, "libtorrent seeder", self.process, self.log)


class LimitedTransmissionSeeder(st.TransmissionSeeder):
    def __init__(self, work: Path, payload: Path, torrent: Path, limit: int, transport: str):
        super().__init__(work, payload, torrent, utp=transport == "utp")
        remote = ["transmission-remote", f"127.0.0.1:{self.rpc}"]
        subprocess.run([*remote, "-u", str(round(limit / 1000))], check=True, capture_output=True)


def transport_settings(transport: str) -> dict:
    """libtorrent on one transport only, so the measurement is of that transport."""
    utp = transport == "utp"
    return {"enable_outgoing_tcp": not utp, "enable_incoming_tcp": not utp,
            "enable_outgoing_utp": utp, "enable_incoming_utp": utp}


def lt_seed_main(torrent: str, data: str, port: int, limit: int, transport: str):
    session = peers.lt_session("127.0.0.1", port=port, extra={"upload_rate_limit": limit, **transport_settings(transport)})
    everyone = lt.ip_filter()
    everyone.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    session.set_peer_class_filter(everyone)
    handle = peers.add_download(session, Path(torrent), Path(data))
    while not handle.status().is_seeding:
        session.pop_alerts()
        time.sleep(0.05)
    print("ready", flush=True)
    while True:
        session.pop_alerts()
        time.sleep(0.5)


def meter_main(torrent: str, save: str, address: str, port: int, seconds: float, transport: str):
    """A libtorrent leecher that samples its payload total; prints the samples as JSON."""
    session = peers.lt_session(address, extra=transport_settings(transport))
    handle = peers.add_download(session, Path(torrent), Path(save))
    samples = []
    deadline = None
    started = time.monotonic()
    last_connect = 0.0
    while True:
        now = time.monotonic()
        status = handle.status()
        if status.total_payload_download > 0:
            samples.append((now, status.total_payload_download))
            if deadline is None:
                deadline = now + seconds
        if deadline is not None and now >= deadline:
            break
        if status.num_peers == 0 and now - last_connect > 2:
            handle.connect_peer(("127.0.0.1", port))
            last_connect = now
        if now - started > seconds + 120:
            print(json.dumps({"error": "no payload arrived"}), flush=True)
            sys.exit(1)
        session.pop_alerts()
        time.sleep(0.05)
    print(json.dumps(samples), flush=True)


def measure(seeder, torrent: Path, work: Path, seconds: float, transport: str) -> tuple:
    save = work / f"meter-{seeder.kind}"
    shutil.rmtree(save, ignore_errors=True)
    log = work / f"meter-{seeder.kind}.json"
    with open(log, "wb") as out:
        process = subprocess.Popen([PYTHON, __file__, "_meter", str(torrent), str(save), "127.0.0.41", str(seeder.port),
                                    str(seconds), transport], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        process.wait(seconds + 180)
    finally:
        stop(process)
    text = log.read_text(errors="replace").strip().splitlines()
    samples = json.loads(text[-1]) if text else []
    shutil.rmtree(save, ignore_errors=True)
    if not isinstance(samples, list) or len(samples) < 2:
        raise SystemExit(f"{seeder.kind}: no samples: {text[-5:]}")
    (t0, b0), (t1, b1) = samples[0], samples[-1]
    average = (b1 - b0) / (t1 - t0)
    worst = 0.0
    for index, (start, total) in enumerate(samples):
        for end, later in samples[index:]:
            if end - start >= 1.0:
                worst = max(worst, (later - total) / (end - start))
                break
    return average, worst


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_lt_seed":
        return lt_seed_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    if len(sys.argv) > 1 and sys.argv[1] == "_meter":
        return meter_main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]), sys.argv[7])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=str(BENCH.parent / ".build-bench/release/seeder"))
    parser.add_argument("--limits", default="1,5,20", help="MiB/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--seeders", default="seeder,libtorrent,transmission")
    parser.add_argument("--transport", choices=["tcp", "utp"], default="tcp")
    args = parser.parse_args()
    limits = [float(text) for text in args.limits.split(",")]
    size = int(max(limits) * MiB * (args.seconds + 10))
    rows = []
    with tempfile.TemporaryDirectory(prefix="limit-accuracy-") as scratch:
        work = Path(scratch)
        payload, torrent, _ = make_payload(work / "data", "limited.bin", size, 1 * MiB)
        for limit_mib in limits:
            limit = int(limit_mib * MiB)
            for kind in args.seeders.split(","):
                if kind == "seeder":
                    seeder = limited_our_seeder(Path(args.binary), work, payload, torrent, limit, args.transport)
                elif kind == "libtorrent":
                    seeder = LimitedLibtorrentSeeder(work, payload, torrent, limit, args.transport)
                else:
                    seeder = LimitedTransmissionSeeder(work, payload, torrent, limit, args.transport)
                try:
                    average, worst = measure(seeder, torrent, work, args.seconds, args.transport)
                finally:
                    seeder.stop()
                row = (limit_mib, kind, average / MiB, (average - limit) / limit * 100, worst / limit * 100)
                rows.append(row)
                print(f"{limit_mib:g} MiB/s {args.transport} {kind:12} average {row[2]:.3f} MiB/s ({row[3]:+.2f} %), "
                      f"worst second {row[4]:.1f} % of the limit", flush=True)
    print(f"\n| limit | seeder | average MiB/s | vs limit | worst 1 s window |\n| --- | --- | ---: | ---: | ---: |")
    for limit_mib, kind, average, error, worst in rows:
        print(f"| {limit_mib:g} MiB/s {args.transport} | {kind} | {average:.3f} | {error:+.2f} % | {worst:.1f} % |")


if __name__ == "__main__":
    main()
