#!/usr/bin/env python3
"""The crypto floor of a full TLS 1.2 mTLS handshake beside each proxy's
handshake cost, from one run of the shared harness (its raw.jsonl and the
`openssl speed` it recorded on the proxy core).

floor = one ECDSA P-256 sign (ServerKeyExchange) + one ECDSA P-256 verify
(the client's CertificateVerify) + one X25519 key agreement, plus the TCP
set-up and tear-down the `direct` row measures when the run has it.

    python3 benches/handshake_floor.py RUN_DIR
    python3 benches/handshake_floor.py --crypto SPEED_FILE   # the crypto part only
"""
import json
import re
import statistics
import sys


def speed(text, pattern):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def crypto_floor(path):
    """µs of one P-256 sign, one P-256 verify and one X25519, from `openssl speed` output."""
    text = open(path).read()
    sign = speed(text, r"256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)")
    verify = speed(text, r"256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+[\d.]+\s+([\d.]+)")
    x25519 = speed(text, r"bits ecdh \(X25519\)\s+\S+\s+([\d.]+)")
    if not (sign and verify and x25519):
        sys.exit(f"{path}: no ECDSA P-256 or X25519 figures")
    return sign, verify, x25519, 1e6 / sign + 1e6 / verify + 1e6 / x25519


def main(run):
    sign, verify, x25519, crypto = crypto_floor(f"{run}/openssl-speed.txt")
    rows = [json.loads(l) for l in open(f"{run}/raw.jsonl") if l.strip()]
    hs = {}
    for r in rows:
        if r.get("test") == "hs" and r.get("requests") and r.get("server_cpu_s"):
            hs.setdefault(r["contender"], []).append(r["server_cpu_s"] * 1e6 / r["requests"])
    med = {c: statistics.median(v) for c, v in hs.items()}
    tcp = med.pop("direct", None)
    floor = crypto + (tcp or 0)
    print(f"### Full handshake vs the crypto floor ({run})")
    print()
    print(f"openssl speed on the proxy core: ECDSA P-256 sign {1e6 / sign:.0f} µs, "
          f"verify {1e6 / verify:.0f} µs, X25519 {1e6 / x25519:.0f} µs: crypto {crypto:.0f} µs"
          + (f"; TCP set-up and tear-down (direct row) {tcp:.0f} µs" if tcp else
             "; no direct row, so no TCP share")
          + f"; floor {floor:.0f} µs.")
    print()
    print("| proxy | CPU µs per full handshake + 1 request (median) | ÷ floor |")
    print("|---|---:|---:|")
    for c, v in sorted(med.items()):
        print(f"| {c} | {v:.0f} | {v / floor:.2f} |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--crypto":
        sign, verify, x25519, crypto = crypto_floor(sys.argv[2])
        print(f"ECDSA P-256 sign {1e6 / sign:.0f} µs + verify {1e6 / verify:.0f} µs "
              f"+ X25519 {1e6 / x25519:.0f} µs = {crypto:.0f} µs")
    elif len(sys.argv) == 2:
        main(sys.argv[1])
    else:
        sys.exit(__doc__)
