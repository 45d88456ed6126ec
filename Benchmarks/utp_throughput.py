#!/usr/bin/python3
"""uTP seeding throughput: our seeder and libtorrent's uTP seed side by side in one run.

Leechers are libtorrent processes with TCP disabled (uTP only, 4 MiB socket buffers,
plaintext), each on its own loopback address; every download's SHA-1 is checked.
Measured, per seeder: MiB/s (payload, first byte to last), the seeder's CPU seconds per
GiB sent (utime + stime from /proc/PID/stat across the download) and the leechers' own
CPU seconds per GiB received (all their threads: network, disk, SHA-1).

1. one uTP leecher, `--size` (default 1 GiB): ours vs libtorrent's uTP seed, plus ours
   over TCP (the same leecher with uTP off and TCP on) as the 80 % reference;
2. `--leechers` (default 4) uTP leechers at `--multi-size` (512 MiB) each: aggregate
   MiB/s and how many finished, against libtorrent's uTP seed with 4 MiB socket buffers
   and with its default ones (the OS default; issue #4's "default figure"). A leecher
   that has not finished after `--slow-timeout` seconds is stopped and counted as
   unfinished; the aggregate then counts the bytes it did get. `--leecher-buffers
   default` gives these leechers the OS default socket buffers too;
3. with `--netem`: a lossy path, 50 ms delay and 1 % loss each way (`--netem-size`):
   the seeder and the leecher in two network namespaces joined by a veth pair with
   netem where the kernel has sch_netem, else a user-space UDP relay on loopback.

    swift build -c release --scratch-path .build-bench-utp --product seeder
    /usr/bin/python3 Benchmarks/utp_throughput.py --size 1G --netem

Every process started here is stopped by its PID; namespaces are deleted at the end.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_throughput as base  # noqa: E402  (read-only reuse: payloads, seeders, TCP leechers)
from seed_throughput import GiB, KiB, MiB, PYTHON, free_port, make_payload, parse_size, stop, wait_until  # noqa: E402

import libtorrent as lt  # noqa: E402
import peers  # noqa: E402

UTP_ONLY = {"enable_outgoing_tcp": False, "enable_incoming_tcp": False,
            "enable_outgoing_utp": True, "enable_incoming_utp": True}
UTP_SOCKET_FLAG = 1 << 17


# --------------------------------------------------------------------------- processes


def leech_main(torrent: str, save: str, address: str, host: str, port: int, timeout: float, transport: str = "utp",
               buffers: str = "4M"):
    """A uTP-only (or, for the TCP reference, TCP-only) libtorrent leecher; prints one
    JSON line (also when it gives up). `buffers` "default": the OS default socket buffers."""
    extra = dict(UTP_ONLY) if transport == "utp" else {}
    if buffers == "default":
        extra.update(recv_socket_buffer_size=0, send_socket_buffer_size=0)
    session = peers.lt_session(address, extra=extra)
    handle = peers.add_download(session, Path(torrent), Path(save))
    total = handle.torrent_file().total_size()
    first = None
    first_bytes = 0
    start = time.time()
    last_connect = 0.0
    transports = set()
    while True:
        status = handle.status()
        now = time.time()
        if first is None and status.total_wanted_done > 0:
            first = now
            first_bytes = status.total_wanted_done
            first_cpu = sum(os.times()[:2])
        for peer in handle.get_peer_info():
            transports.add("utp" if peer.flags & UTP_SOCKET_FLAG else "tcp")
        if status.is_seeding:
            break
        ready = status.state in (lt.torrent_status.downloading, lt.torrent_status.finished)
        if ready and status.num_peers == 0 and now - last_connect > 2:
            handle.connect_peer((host, port))
            last_connect = now
        if now - start > timeout:
            print(json.dumps({"finished": False, "progress": status.progress, "first": first, "end": now,
                              "bytes": status.total_wanted_done - first_bytes if first else 0,
                              "transports": sorted(transports)}), flush=True)
            return
        session.pop_alerts()
        time.sleep(0.02)
    done = time.time()
    rate = (total - first_bytes) / (done - first) if first and done > first else 0
    # The leecher's own CPU (all its threads) over the transfer, in cores: near 1.0
    # means the leecher, not the seeder, set the pace.
    cores = (sum(os.times()[:2]) - first_cpu) / (done - first) if first and done > first else 0
    print(json.dumps({"finished": True, "first": first, "done": done, "rate": rate, "cores": cores,
                      "transports": sorted(transports)}), flush=True)


def lt_seed_main(torrent: str, data: str, address: str, port: int, buffers: str = "4M"):
    """libtorrent's uTP seed: default settings, TCP off, 4 MiB socket buffers, or with
    `buffers` "default" libtorrent's own default (0: the OS default, 208 KiB here)."""
    extra = dict(UTP_ONLY)
    if buffers == "default":
        extra.update(recv_socket_buffer_size=0, send_socket_buffer_size=0)
    session = peers.lt_session(address, port=port, extra=extra)
    handle = peers.add_download(session, Path(torrent), Path(data))
    while not handle.status().is_seeding:
        session.pop_alerts()
        time.sleep(0.05)
    print("ready", flush=True)
    while True:
        session.pop_alerts()
        time.sleep(0.5)


class OurSeeder(base.Seeder):
    """Our release build; `prefix` runs it inside a namespace (nsenter execs, keeping the PID)."""
    kind = "seeder"

    def __init__(self, binary: Path, work: Path, payload: Path, torrent: Path, address="127.0.0.1", prefix=()):
        self.port = free_port()
        self.host = address
        home = work / "ours"
        shutil.rmtree(home, ignore_errors=True)
        (home / "torrents").mkdir(parents=True)
        config = home / "seeder.toml"
        config.write_text(
            f'[network]\nlisten_port = {self.port}\nbind_ipv4 = "{address}"\nbind_ipv6 = ""\n\n'
            f'[storage]\ndata_dir = "{payload.parent}"\ntorrents_dir = "{home / "torrents"}"\n'
            f'state_dir = "{home / "state"}"\n\n[status]\nlisten = "127.0.0.1:{free_port()}"\n\n'
            f'[log]\nlevel = "debug"\n')
        self.log = home / "seeder.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([*prefix, str(binary), "run", "--config", str(config), str(torrent)],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        name = re.escape(payload.name)
        wait_until(lambda: re.search(rf"seeding {name} \(", self.log.read_text(errors="replace")), 300,
                   "our seeder checking the data", self.process, self.log)

    def utp_counters(self) -> str:
        lines = re.findall(r"uTP connection closed .*", self.log.read_text(errors="replace"))
        return "\n".join(lines[-4:])


class LibtorrentSeeder(base.Seeder):
    kind = "libtorrent"

    def __init__(self, work: Path, payload: Path, torrent: Path, address="127.0.0.1", prefix=(), buffers="4M"):
        self.port = free_port()
        self.host = address
        if buffers == "default":
            self.kind = "libtorrent-default"
        self.log = work / "lt-utp-seed.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([*prefix, PYTHON, __file__, "_lt_seed", str(torrent), str(payload.parent),
                                             address, str(self.port), buffers],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: "ready" in self.log.read_text(errors="replace"), 300, "libtorrent seeder", self.process, self.log)


def run_utp_leechers(seeder, torrent: Path, work: Path, count: int, size: int, digest: str, timeout: float,
                     addresses=None, prefix=(), transport="utp", buffers="4M") -> dict:
    """`count` uTP (or TCP) leecher processes at once. Returns aggregate MiB/s (bytes
    received by all of them, first byte to last), how many finished, the seeder's CPU
    s/GiB, the leechers' CPU s/GiB and each leecher's MiB/s."""
    cpu_before = seeder.cpu()
    leechers = []
    label = re.sub(r"[^A-Za-z0-9]+", "-", seeder.kind)
    for index in range(count):
        save = work / f"utp-leech-{label}-{index}"
        shutil.rmtree(save, ignore_errors=True)
        log = work / f"utp-leech-{label}-{index}.json"
        address = addresses[index] if addresses else f"127.0.0.{51 + index}"
        with open(log, "wb") as out:
            process = subprocess.Popen([*prefix, PYTHON, __file__, "_leech", str(torrent), str(save), address, seeder.host,
                                        str(seeder.port), str(timeout), transport, buffers],
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        leechers.append((process, log, save))
    results = []
    try:
        for process, log, save in leechers:
            process.wait(timeout + 60)
            text = log.read_text(errors="replace")
            if process.returncode != 0:
                raise SystemExit(f"leecher failed against {seeder.kind}:\n{text[-3000:]}")
            results.append(json.loads(text.strip().splitlines()[-1]))
    finally:
        for process, _, _ in leechers:
            stop(process)
    cpu = seeder.cpu() - cpu_before
    finished = [result for result in results if result["finished"]]
    for result, (_, _, save) in zip(results, leechers):
        if result["finished"]:
            got = peers.file_sha1(next(save.iterdir()))
            if got != digest:
                raise SystemExit(f"{seeder.kind}: downloaded file has sha1 {got}, expected {digest}")
        if set(result["transports"]) - {transport}:
            raise SystemExit(f"{seeder.kind}: a leecher used {result['transports']}, expected only {transport}")
        shutil.rmtree(save, ignore_errors=True)
    row = {"finished": len(finished), "leechers": count,
           "per_leecher": [round(result.get("rate", 0) / MiB, 1) for result in results],
           "leecher_cores": [round(result.get("cores", 0), 2) for result in results]}
    started = [result for result in results if result.get("first")]
    if started:
        first = min(result["first"] for result in started)
        last = max(result["done"] if result["finished"] else result["end"] for result in started)
        total = sum(size if result["finished"] else result["bytes"] for result in started)
        leecher_cpu = sum(result["cores"] * (result["done"] - result["first"]) for result in finished)
        row.update(mibs=total / MiB / (last - first), cpu_per_gib=cpu / (total / GiB),
                   leecher_cpu_per_gib=leecher_cpu / (size * len(finished) / GiB) if finished else float("nan"))
    else:
        row.update(mibs=0.0, cpu_per_gib=float("nan"), leecher_cpu_per_gib=float("nan"))
    return row


# --------------------------------------------------------------------------- lossy path


class NetemPair:
    """Two namespaces joined by a veth pair, netem delay and loss on both ends. Needs
    the kernel's sch_netem (`NetemPair.available()`)."""

    def __init__(self, delay_ms: int, loss_percent: float, tag: str):
        self.names = [f"utpb-s-{tag}", f"utpb-c-{tag}"]
        self.addresses = ["10.79.0.1", "10.79.0.2"]
        for name in self.names:
            subprocess.run(["ip", "netns", "add", name], check=True)
        try:
            subprocess.run(["ip", "link", "add", "veth-s", "netns", self.names[0], "type", "veth",
                            "peer", "name", "veth-c", "netns", self.names[1]], check=True)
            for name, device, address in zip(self.names, ["veth-s", "veth-c"], self.addresses):
                run = ["ip", "netns", "exec", name]
                subprocess.run([*run, "ip", "link", "set", "lo", "up"], check=True)
                subprocess.run([*run, "ip", "addr", "add", f"{address}/24", "dev", device], check=True)
                subprocess.run([*run, "ip", "link", "set", device, "up"], check=True)
                subprocess.run([*run, "tc", "qdisc", "add", "dev", device, "root", "netem", "delay", f"{delay_ms}ms",
                                "loss", f"{loss_percent}%", "limit", "100000"], check=True)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def available() -> bool:
        name = f"utpb-probe-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        try:
            return subprocess.run(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                                   "delay", "1ms"], capture_output=True).returncode == 0
        finally:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)

    def prefix(self, index: int):
        return ["ip", "netns", "exec", self.names[index]]

    def close(self):
        for name in self.names:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)


class LossyRelay:
    """Where netem is missing (this kernel has no sch_netem): a UDP relay on loopback
    that delays every datagram by `delay_ms` and drops `loss_percent` of them, each
    way. The leecher talks to the relay's address; one upstream socket per client
    endpoint talks to the seeder. A thread; stopped by close()."""

    def __init__(self, listen: str, target: tuple, delay_ms: float, loss_percent: float):
        import heapq
        import random
        import select
        import socket
        import threading
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind((listen, 0))
        self.host, self.port = self.front.getsockname()
        for sock in (self.front,):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * MiB)
        self.stopping = False
        rng = random.Random(50)
        delay = delay_ms / 1000
        upstream = {}   # client address -> socket toward the seeder
        clients = {}    # upstream socket -> client address
        queue = []      # (due, sequence, socket, bytes, destination)
        counter = [0]

        def schedule(sock, data, destination):
            if rng.random() * 100 < loss_percent:
                return
            counter[0] += 1
            heapq.heappush(queue, (time.monotonic() + delay, counter[0], sock, data, destination))

        def run():
            while not self.stopping:
                timeout = max(0.0, min(0.01, queue[0][0] - time.monotonic())) if queue else 0.01
                readable, _, _ = select.select([self.front, *clients], [], [], timeout)
                for sock in readable:
                    for _ in range(256):
                        try:
                            data, source = sock.recvfrom(65536, socket.MSG_DONTWAIT)
                        except BlockingIOError:
                            break
                        if sock is self.front:
                            up = upstream.get(source)
                            if up is None:
                                up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                                up.bind((listen, 0))
                                up.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * MiB)
                                upstream[source], clients[up] = up, source
                            schedule(up, data, target)
                        else:
                            schedule(self.front, data, clients[sock])
                now = time.monotonic()
                while queue and queue[0][0] <= now:
                    _, _, sock, data, destination = heapq.heappop(queue)
                    try:
                        sock.sendto(data, destination)
                    except OSError:
                        pass
            for sock in [self.front, *clients]:
                sock.close()

        self.thread = threading.Thread(target=run, name="lossy-relay", daemon=True)
        self.thread.start()

    def close(self):
        self.stopping = True
        self.thread.join(5)


# --------------------------------------------------------------------------- main


def make_seeder(kind: str, args, work: Path, payload: Path, torrent: Path, address="127.0.0.1", prefix=()):
    if kind in ("seeder", "tcp"):
        return OurSeeder(args.seeder_bin, work, payload, torrent, address, prefix)
    return LibtorrentSeeder(work, payload, torrent, address, prefix,
                            buffers="default" if kind == "libtorrent-default" else "4M")


LABELS = {"seeder": "ours uTP", "libtorrent": "libtorrent uTP", "libtorrent-default": "libtorrent uTP, default buffers",
          "tcp": "ours over TCP"}


def line(label: str, result: dict):
    print(f"{label:<56} {result['mibs']:7.1f} MiB/s  {result.get('cpu_per_gib', float('nan')):5.2f} CPU s/GiB  "
          f"leecher {result.get('leecher_cpu_per_gib', float('nan')):5.2f} CPU s/GiB  "
          f"finished {result.get('finished', 1)}/{result.get('leechers', 1)}  per leecher {result['per_leecher']}  "
          f"leecher CPU cores {result.get('leecher_cores', '-')}  "
          f"load {os.getloadavg()[0]:.2f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=GiB, help="single-leecher payload (default 1G)")
    parser.add_argument("--multi-size", type=parse_size, default=512 * MiB, help="payload of the multi-leecher run")
    parser.add_argument("--leechers", type=int, default=4)
    parser.add_argument("--piece-size", type=parse_size, default=1 * MiB)
    parser.add_argument("--seeder-bin", type=Path, default=base.REPO / ".build-bench-utp/release/seeder")
    parser.add_argument("--netem", action="store_true", help="also run the 50 ms / 1 %% loss namespace pair")
    parser.add_argument("--netem-size", type=parse_size, default=64 * MiB)
    parser.add_argument("--netem-timeout", type=float, default=240)
    parser.add_argument("--runs", type=int, default=1,
                        help="repeat the loopback parts, alternating the seeders' order (the machine is shared and noisy)")
    parser.add_argument("--skip", default="",
                        help="comma-separated parts to skip: single, tcp, multi, default-buffers")
    parser.add_argument("--slow-timeout", type=float, default=180,
                        help="seconds libtorrent's default-buffer seed gets in the multi-leecher part")
    parser.add_argument("--leecher-buffers", choices=["4M", "default"], default="4M",
                        help="the multi-leecher part's leechers' socket buffers (default: 4 MiB, as in the tests); "
                             "with 'default' every seeder gets --slow-timeout")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    assert os.access(args.seeder_bin, os.X_OK), f"{args.seeder_bin}: build it with " \
        "swift build -c release --scratch-path .build-bench-utp --product seeder"
    skip = set(filter(None, args.skip.split(",")))
    work = Path(tempfile.mkdtemp(prefix="utp-bench-"))
    rows = []
    try:
        print(f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}", flush=True)
        if not {"single", "tcp"} <= skip:
            payload, torrent, digest = make_payload(work / "data", "payload.bin", args.size, args.piece_size)
            kinds = ([] if "single" in skip else ["seeder", "libtorrent"]) + ([] if "tcp" in skip else ["tcp"])
            for run in range(args.runs):
                for kind in kinds if run % 2 == 0 else list(reversed(kinds)):
                    seeder = make_seeder(kind, args, work, payload, torrent)
                    try:
                        result = run_utp_leechers(seeder, torrent, work, 1, args.size, digest, timeout=600,
                                                  transport="tcp" if kind == "tcp" else "utp")
                    finally:
                        seeder.stop()
                    label = f"1 leecher {args.size // MiB} MiB, {LABELS[kind]}"
                    line(label, result)
                    rows.append({"part": "single", "seeder": kind, "run": run + 1, **result})
            shutil.rmtree(work / "data")
        if "multi" not in skip:
            payload, torrent, digest = make_payload(work / "data-multi", "multi.bin", args.multi_size, args.piece_size)
            kinds = ["seeder", "libtorrent"] + ([] if "default-buffers" in skip else ["libtorrent-default"])
            for run in range(args.runs):
                for kind in kinds if run % 2 == 0 else list(reversed(kinds)):
                    seeder = make_seeder(kind, args, work, payload, torrent)
                    try:
                        slow = kind == "libtorrent-default" or args.leecher_buffers == "default"
                        result = run_utp_leechers(seeder, torrent, work, args.leechers, args.multi_size, digest,
                                                  timeout=args.slow_timeout if slow else 600,
                                                  buffers=args.leecher_buffers)
                    finally:
                        seeder.stop()
                    leechers = f"{args.leechers} leechers" + (" (default buffers)" if args.leecher_buffers == "default" else "")
                    line(f"{leechers} x {args.multi_size // MiB} MiB, {LABELS[kind]}", result)
                    rows.append({"part": "multi", "seeder": kind, "run": run + 1, **result})
            shutil.rmtree(work / "data-multi")
        if args.netem:
            payload, torrent, digest = make_payload(work / "data-netem", "netem.bin", args.netem_size, 256 * KiB)
            use_netem = NetemPair.available()
            print("lossy path: " + ("netem in a namespace pair" if use_netem else
                                    "no sch_netem in this kernel: user-space relay on loopback") +
                  ", 50 ms each way, 1 % loss each way", flush=True)
            for kind in ["seeder", "libtorrent"]:
                if use_netem:
                    pair = NetemPair(50, 1, f"{os.getpid() % 10000}")
                    try:
                        seeder = make_seeder(kind, args, work, payload, torrent, pair.addresses[0], pair.prefix(0))
                        try:
                            result = run_utp_leechers(seeder, torrent, work, 1, args.netem_size, digest,
                                                      args.netem_timeout, addresses=[pair.addresses[1]],
                                                      prefix=pair.prefix(1))
                        finally:
                            seeder.stop()
                    finally:
                        pair.close()
                else:
                    seeder = make_seeder(kind, args, work, payload, torrent)
                    relay = LossyRelay("127.0.0.80", (seeder.host, seeder.port), 50, 1)
                    try:
                        target = type("Target", (), {"kind": seeder.kind, "host": relay.host, "port": relay.port,
                                                     "cpu": seeder.cpu})()
                        result = run_utp_leechers(target, torrent, work, 1, args.netem_size, digest, args.netem_timeout,
                                                  addresses=["127.0.0.81"])
                    finally:
                        relay.close()
                        seeder.stop()
                line(f"lossy 50 ms 1 %, {args.netem_size // MiB} MiB, {kind} uTP", result)
                rows.append({"part": "lossy", "seeder": kind, **result})
        summarize(rows)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summarize(rows):
    """Medians per part and seeder, and the two ratios the goals are stated in."""
    def median(values):
        values = sorted(values)
        return values[len(values) // 2] if values else float("nan")
    print("\n| part | seeder | MiB/s (median) | runs | CPU s/GiB (median) | leecher CPU s/GiB (median) | finished |")
    print("| --- | --- | ---: | --- | ---: | ---: | --- |")
    medians = {}
    cpu = {}
    for part in ["single", "multi", "lossy"]:
        for kind in ["seeder", "libtorrent", "libtorrent-default", "tcp"]:
            mine = [row for row in rows if row["part"] == part and row["seeder"] == kind]
            if not mine:
                continue
            medians[part, kind] = median([row["mibs"] for row in mine])
            cpu[part, kind] = (median([row["cpu_per_gib"] for row in mine]),
                               median([row.get("leecher_cpu_per_gib", float("nan")) for row in mine]))
            rates = ", ".join(f"{row['mibs']:.1f}" for row in mine)
            finished = ", ".join(f"{row['finished']}/{row['leechers']}" for row in mine)
            print(f"| {part} | {LABELS[kind]} | {medians[part, kind]:.1f} | "
                  f"{rates} | {cpu[part, kind][0]:.2f} | {cpu[part, kind][1]:.2f} | {finished} |")
    for part in ["single", "multi", "lossy"]:
        for other in ["libtorrent", "libtorrent-default"]:
            if (part, "seeder") in medians and (part, other) in medians and medians[part, other] > 0:
                print(f"{part}: ours / {LABELS[other]} = {medians[part, 'seeder'] / medians[part, other]:.2f}x")
    if ("single", "seeder") in medians and ("single", "tcp") in medians:
        print(f"single: ours uTP / ours TCP = {medians['single', 'seeder'] / medians['single', 'tcp']:.0%}")
        # Seeder and leecher share this machine's cores: when they are all busy, the
        # rates go as the inverse of the CPU both spend per GiB.
        utp, tcp = sum(cpu["single", "seeder"]), sum(cpu["single", "tcp"])
        print(f"single: seeder + leecher CPU per GiB, uTP {utp:.2f} s, TCP {tcp:.2f} s; "
              f"TCP / uTP = {tcp / utp:.0%}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_leech":
        leech_main(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), float(sys.argv[7]), sys.argv[8],
                   sys.argv[9])
    elif len(sys.argv) > 1 and sys.argv[1] == "_lt_seed":
        lt_seed_main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
    else:
        main()
