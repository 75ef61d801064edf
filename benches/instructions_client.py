#!/usr/bin/env python3
"""Fixed workloads for benches/instructions.sh, against 127.0.0.1 only.

  requests: --conns keep-alive mTLS connections, --requests GETs in all, sent
            one at a time on each connection (round robin), each response
            read in full before the next request on that connection.
  handshakes: --handshakes new mTLS connections (full handshakes: no session
            tickets, no session reuse), one GET each, then closed.

Prints "DONE <ok> <failed>". Bounded: every step has a timeout, the whole
run --deadline seconds.
"""
import argparse, socket, sys, time

import tls_client

p = argparse.ArgumentParser()
p.add_argument("mode", choices=["requests", "handshakes"])
p.add_argument("--port", type=int, required=True)
p.add_argument("--cert", required=True)
p.add_argument("--key", required=True)
p.add_argument("--conns", type=int, default=8)
p.add_argument("--requests", type=int, default=2000)
p.add_argument("--handshakes", type=int, default=200)
p.add_argument("--path", default="/small")
p.add_argument("--deadline", type=float, default=600)
a = p.parse_args()
assert 0 < a.conns <= 64 and 0 < a.requests <= 100000 and 0 < a.handshakes <= 10000

REQ = f"GET {a.path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
t_end = time.monotonic() + a.deadline


def context():
    return tls_client.context(a.cert, a.key)


def connect(ctx):
    s = socket.create_connection(("127.0.0.1", a.port), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(s, server_hostname="localhost")


def one(s):
    """Sends one request and reads its response; True on a 200."""
    s.sendall(REQ)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return False
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            return False
        body += chunk
    return head.split(b" ", 2)[1] == b"200"


ok = failed = 0
if a.mode == "requests":
    ctx = context()
    conns = [connect(ctx) for _ in range(a.conns)]
    for i in range(a.requests):
        if time.monotonic() > t_end:
            break
        if one(conns[i % a.conns]):
            ok += 1
        else:
            failed += 1
    for s in conns:
        s.close()
else:
    for i in range(a.handshakes):
        if time.monotonic() > t_end:
            break
        try:
            s = connect(context())
            if one(s):
                ok += 1
            else:
                failed += 1
            s.close()
        except OSError as e:
            failed += 1
            print("error:", e, file=sys.stderr)
print(f"DONE {ok} {failed}", flush=True)
