#!/usr/bin/python3
"""Hash speed: `seeder verify` on a file in the page cache, against the SHA-1 limit of
this machine (`openssl speed -evp sha1`, per core times cores) and against libtorrent's
create_torrent hashing the same file, in one run.

Usage: Benchmarks/hash_speed.py [--size-mib 2048] [--piece-size 4194304] [--runs 3] [--seeder PATH]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import libtorrent as lt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def openssl_sha1(block, processes=1):
    command = ["openssl", "speed", "-evp", "sha1", "-bytes", str(block), "-seconds", "3"]
    if processes > 1:
        command[2:2] = ["-multi", str(processes)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    # The last line: "sha1   123456.78k" (kilobytes of 1000 per second).
    line = [l for l in out.splitlines() if l.lower().startswith("sha1")][-1]
    kbps = float(line.split()[-1].rstrip("k"))
    return kbps * 1000


def make_payload(path, size):
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(chunk)
            chunk = chunk[1:] + chunk[:1]


def warm(path):
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def time_seeder_verify(seeder, torrent, data_dir):
    start = time.perf_counter()
    result = subprocess.run([seeder, "verify", torrent, data_dir], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit("seeder verify failed:\n" + result.stdout + result.stderr)
    return elapsed


def time_libtorrent(path, piece_size):
    fs = lt.file_storage()
    lt.add_files(fs, path)
    t = lt.create_torrent(fs, piece_size, flags=lt.create_torrent.v1_only)
    start = time.perf_counter()
    lt.set_piece_hashes(t, os.path.dirname(path))
    elapsed = time.perf_counter() - start
    return elapsed, lt.torrent_info(lt.bdecode(lt.bencode(t.generate()))).info_hash()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--piece-size", type=int, default=4 << 20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seeder", default=os.path.join(ROOT, ".build/release/seeder"))
    args = parser.parse_args()

    cores = os.cpu_count()
    size = args.size_mib << 20
    work = tempfile.mkdtemp(prefix="seeder-hash-bench-")
    try:
        payload = os.path.join(work, "payload.bin")
        make_payload(payload, size)
        torrent = os.path.join(work, "payload.torrent")
        subprocess.run([args.seeder, "create", payload, "--piece-size", str(args.piece_size), "-o", torrent],
                       check=True, capture_output=True)
        warm(payload)

        limit_per_core = openssl_sha1(16384)
        limit_multi = openssl_sha1(16384, cores)
        seeder_times, lt_times = [], []
        for _ in range(args.runs):
            warm(payload)
            seeder_times.append(time_seeder_verify(args.seeder, torrent, work))
            warm(payload)
            elapsed, lt_hash = time_libtorrent(payload, args.piece_size)
            lt_times.append(elapsed)
        ours = subprocess.run([args.seeder, "info", torrent], capture_output=True, text=True).stdout
        same = str(lt_hash) in ours

        mib = 1 << 20
        best_seeder = size / min(seeder_times) / mib
        best_lt = size / min(lt_times) / mib
        limit = limit_per_core * cores / mib
        print(f"machine: {cores} cores, {os.uname().machine}, {open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}")
        print(f"payload: {args.size_mib} MiB in the page cache, pieces of {args.piece_size >> 10} KiB, best of {args.runs}")
        print(f"{'what':38} {'MiB/s':>9} {'of SHA-1 limit':>15}")
        print(f"{'openssl speed -evp sha1, 1 core':38} {limit_per_core / mib:9.0f} {'':>15}")
        print(f"{f'SHA-1 limit, 1 core x {cores}':38} {limit:9.0f} {'100.0 %':>15}")
        print(f"{f'openssl speed -multi {cores}':38} {limit_multi / mib:9.0f} {limit_multi / mib / limit * 100:13.1f} %")
        print(f"{'seeder verify':38} {best_seeder:9.0f} {best_seeder / limit * 100:13.1f} %")
        print(f"{'libtorrent create_torrent (set_piece_hashes)':38} {best_lt:9.0f} {best_lt / limit * 100:13.1f} %")
        print(f"seeder / libtorrent: {best_seeder / best_lt:.2f}x; same info-hash: {same}")
        print(f"runs (s): seeder {['%.3f' % t for t in seeder_times]}, libtorrent {['%.3f' % t for t in lt_times]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
