#!/usr/bin/env python3
"""Holds N mutual-TLS keep-alive connections open to a proxy on loopback,
from several 127.0.0.x source addresses (one address has only about 28,000
ephemeral ports), one GET on each, then idle. Prints "READY <ok> <failed>
<seconds>" when all are open, waits for a line on stdin (or --hold
seconds), closes them and exits.

Bounded: at most 60,000 connections, every step has a timeout, the whole
run ends by --deadline. Only 127.0.0.0/8 is contacted.

    python3 benches/held.py --port 18460 -n 50000 --cert d.pem --key d.key
"""
import argparse
import asyncio
import multiprocessing as mp
import resource
import sys
import time

import tls_client

PER_SOURCE = 15000


def worker(a, src, n, ready, go):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = n + 1000 if hard == resource.RLIM_INFINITY else min(n + 1000, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    ctx = tls_client.context(a.cert, a.key)
    req = b"GET /small HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n"

    async def one(sem, held):
        async with sem:
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(a.host, a.port, ssl=ctx, local_addr=(src, 0)), 30)
                w.write(req)
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
                if not head.startswith(b"HTTP/1.1 200"):
                    w.close()
                    return False
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await asyncio.wait_for(r.readexactly(length), 30)
                held.append(w)
                return True
            except Exception:
                return False

    async def run():
        sem = asyncio.Semaphore(a.parallel)
        held = []
        t0 = time.monotonic()
        results = await asyncio.gather(*(one(sem, held) for _ in range(n)))
        ok = sum(results)
        ready.put((ok, n - ok, time.monotonic() - t0))
        # Idle until told (or the deadline).
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, go.wait, a.deadline)
        for w in held:
            w.close()

    asyncio.run(run())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("-n", type=int, default=10000)
    p.add_argument("--parallel", type=int, default=64, help="handshakes in flight per process")
    p.add_argument("--hold", type=float, default=0, help="0: until a line on stdin")
    p.add_argument("--deadline", type=float, default=600)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    a = p.parse_args()
    assert a.host.startswith("127."), "loopback only"
    assert 0 < a.n <= 60000
    sources = [f"127.0.0.{2 + i}" for i in range((a.n + PER_SOURCE - 1) // PER_SOURCE)]
    ready, go = mp.Queue(), mp.Event()
    procs = []
    left = a.n
    for src in sources:
        n = min(PER_SOURCE, left)
        left -= n
        pr = mp.Process(target=worker, args=(a, src, n, ready, go), daemon=True)
        pr.start()
        procs.append(pr)
    ok = failed = 0
    took = 0.0
    for _ in procs:
        o, f, t = ready.get(timeout=a.deadline)
        ok, failed, took = ok + o, failed + f, max(took, t)
    print(f"READY {ok} {failed} {took:.1f}", flush=True)
    if a.hold > 0:
        time.sleep(a.hold)
    else:
        sys.stdin.readline()
    go.set()
    for pr in procs:
        pr.join(30)
        if pr.is_alive():
            pr.terminate()


if __name__ == "__main__":
    main()
