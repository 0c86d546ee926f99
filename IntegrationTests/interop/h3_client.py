"""HTTP/3 GETs with aioquic, for the integration tests.

  h3_client.py PORT PATH [COUNT] [--settings]

Sends COUNT (default 1) GET requests for PATH at once on one QUIC connection to 127.0.0.1:PORT (authority
localhost, certificate not verified) and prints, per response in stream order, `status BODY`. With --settings it
first prints the server's SETTINGS as `settings ID=VALUE ...` (hex IDs, sorted) on a line of its own.
"""

import asyncio
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiters = {}
        self.responses = {}

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            if not isinstance(ev, (HeadersReceived, DataReceived)):
                continue
            r = self.responses.setdefault(ev.stream_id, {"headers": [], "body": b""})
            if isinstance(ev, HeadersReceived):
                r["headers"] += ev.headers
            else:
                r["body"] += ev.data
            if ev.stream_ended and ev.stream_id in self.waiters:
                self.waiters.pop(ev.stream_id).set_result(r)

    async def get(self, path):
        sid = self._quic.get_next_available_stream_id()
        self.h3.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"),
                                   (b":path", path.encode())], end_stream=True)
        fut = asyncio.get_running_loop().create_future()
        self.waiters[sid] = fut
        self.transmit()
        return await fut


async def main(port, path, count, show_settings):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    config.verify_mode = ssl.CERT_NONE
    async with connect("127.0.0.1", port, configuration=config, create_protocol=Client) as client:
        results = await asyncio.wait_for(asyncio.gather(*(client.get(path) for _ in range(count))), 20)
        if show_settings:
            received = client.h3.received_settings or {}
            sys.stdout.write("settings %s\n" % " ".join("0x%x=%d" % (k, received[k]) for k in sorted(received)))
        for r in results:
            status = dict(r["headers"]).get(b":status", b"?").decode()
            sys.stdout.write("%s %s" % (status, r["body"].decode()))


args = [a for a in sys.argv[1:] if a != "--settings"]
asyncio.run(main(int(args[0]), args[1], int(args[2]) if len(args) > 2 else 1, "--settings" in sys.argv))
