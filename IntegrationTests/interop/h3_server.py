"""An HTTP/3 server on aioquic, as a peer for usher's HTTP/3 client.

  h3_server.py PORT CERT KEY

Listens on 127.0.0.1:PORT. Every request gets 200 with `x-served-by: aioquic` and the body
`aioquic METHOD PATH BYTES`, where BYTES is how many request body bytes arrived; `?size=N` appends N bytes of "y".
Request header fields named x-echo-* come back as response fields.
"""

import asyncio
import sys
from urllib.parse import parse_qs, urlsplit

from aioquic.asyncio import serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration


class Server(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = None
        self.requests = {}

    def quic_event_received(self, event):
        if self.h3 is None:
            self.h3 = H3Connection(self._quic)
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                r = self.requests.setdefault(ev.stream_id, {"headers": dict(ev.headers), "body": 0})
            elif isinstance(ev, DataReceived):
                r = self.requests.setdefault(ev.stream_id, {"headers": {}, "body": 0})
                r["body"] += len(ev.data)
            else:
                continue
            if ev.stream_ended:
                self.respond(ev.stream_id, self.requests.pop(ev.stream_id))

    def respond(self, sid, r):
        h = r["headers"]
        path = h.get(b":path", b"/").decode()
        size = int(parse_qs(urlsplit(path).query).get("size", ["0"])[0])
        body = ("aioquic %s %s %d" % (h.get(b":method", b"").decode(), path, r["body"])).encode() + b"y" * size
        fields = [(b":status", b"200"), (b"x-served-by", b"aioquic"), (b"content-length", str(len(body)).encode())]
        fields += [(k, v) for k, v in h.items() if k.startswith(b"x-echo-")]
        self.h3.send_headers(sid, fields)
        self.h3.send_data(sid, body, end_stream=True)
        self.transmit()


async def main(port, cert, key):
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(cert, key)
    await serve("127.0.0.1", port, configuration=config, create_protocol=Server)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.Future()


asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
