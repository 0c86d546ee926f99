"""One or more HTTP/3 requests with aioquic, for the integration tests.

  h3_request.py PORT PATH [--method M] [--body-size N] [--trailer NAME=VALUE]... [--count C] [--authority A]
                [--stall] [--sequential]

Opens one QUIC connection to 127.0.0.1:PORT (certificate not verified), sends C (default 1) requests at once and
prints one JSON object per response, in request order: status, header fields, body length, the body's FNV-1a 64
hash (hex) and its first 200 bytes, trailer fields, and the subject of the server's certificate (peer_cn). A
request body of N bytes is bytes i % 251, sent in 64 KiB pieces as flow control allows, then the trailers if any. --stall sends the headers and half the body, then
exits without closing: a client that vanishes mid-stream. --sequential sends the C requests one after another on
the connection (each must be answered within 10 s), and stops sending a body once its response is complete.
"""

import argparse
import asyncio
import json
import os
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamReset


def fnv(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%x" % h


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiters = {}
        self.responses = {}

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id in self.waiters:
            self.waiters.pop(event.stream_id).set_result({"reset": event.error_code})
            return
        for ev in self.h3.handle_event(event):
            if not isinstance(ev, (HeadersReceived, DataReceived)):
                continue
            r = self.responses.setdefault(ev.stream_id, {"headers": [], "trailers": [], "body": bytearray()})
            if isinstance(ev, HeadersReceived):
                if r["headers"] and not dict(ev.headers).get(b":status"):
                    r["trailers"] += ev.headers
                elif dict(ev.headers).get(b":status", b"200").startswith(b"1"):
                    pass
                else:
                    r["headers"] += ev.headers
            else:
                r["body"] += ev.data
            if ev.stream_ended and ev.stream_id in self.waiters:
                self.waiters.pop(ev.stream_id).set_result(r)

    async def request(self, args, body):
        sid = self._quic.get_next_available_stream_id()
        headers = [(b":method", args.method.encode()), (b":scheme", b"https"),
                   (b":authority", args.authority.encode()), (b":path", args.path.encode())]
        if body is not None:
            headers.append((b"content-length", str(len(body)).encode()))
        last = body is None and not args.trailer
        self.h3.send_headers(sid, headers, end_stream=last)
        fut = asyncio.get_running_loop().create_future()
        self.waiters[sid] = fut
        self.transmit()
        if body is not None:
            limit = len(body) // 2 if args.stall else len(body)
            sent = 0
            while sent < limit:
                if args.sequential and fut.done():
                    break  # answered without the rest of the body (the server sent STOP_SENDING)
                piece = body[sent:min(sent + 65536, limit)]
                # Wait while the stream's send buffer is full (aioquic buffers without bound otherwise).
                while self._quic._streams[sid].sender.buffer_is_empty is False and \
                        len(self._quic._streams[sid].sender._buffer) > 1 << 20:
                    await asyncio.sleep(0.005)
                end = sent + len(piece) == len(body) and not args.trailer
                try:
                    self.h3.send_data(sid, piece, end_stream=end)
                except Exception:
                    if not args.sequential:
                        raise
                    break
                self.transmit()
                sent += len(piece)
                await asyncio.sleep(0)
            if args.stall:
                await asyncio.sleep(0.3)
                os._exit(0)
        if args.trailer:
            self.h3.send_headers(sid, [(t.split("=", 1)[0].encode(), t.split("=", 1)[1].encode()) for t in args.trailer],
                                 end_stream=True)
            self.transmit()
        return await fut


def describe(r):
    if "reset" in r:
        return {"reset": r["reset"]}
    body = bytes(r["body"])
    return {
        "status": int(dict(r["headers"]).get(b":status", b"0")),
        "headers": {k.decode(): v.decode() for k, v in r["headers"] if not k.startswith(b":")},
        "length": len(body),
        "fnv": fnv(body),
        "head": body[:200].decode("latin-1"),
        "trailers": {k.decode(): v.decode() for k, v in r["trailers"]},
    }


async def main(args):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    config.verify_mode = ssl.CERT_NONE
    config.server_name = args.authority.split(":")[0]
    body = bytes(i % 251 for i in range(args.body_size)) if args.body_size is not None else None
    async with connect("127.0.0.1", args.port, configuration=config, create_protocol=Client) as client:
        if args.sequential:
            results = []
            for _ in range(args.count):
                results.append(await asyncio.wait_for(client.request(args, body), 10))
        else:
            results = await asyncio.wait_for(asyncio.gather(*(client.request(args, body) for _ in range(args.count))), 60)
        cert = client._quic.tls._peer_certificate
        for r in results:
            d = describe(r)
            if cert is not None:
                d["peer_cn"] = cert.subject.rfc4514_string()
            sys.stdout.write(json.dumps(d, sort_keys=True) + "\n")


p = argparse.ArgumentParser()
p.add_argument("port", type=int)
p.add_argument("path")
p.add_argument("--method", default="GET")
p.add_argument("--body-size", type=int)
p.add_argument("--trailer", action="append", default=[])
p.add_argument("--count", type=int, default=1)
p.add_argument("--authority", default="localhost")
p.add_argument("--stall", action="store_true")
p.add_argument("--sequential", action="store_true")
asyncio.run(main(p.parse_args()))
