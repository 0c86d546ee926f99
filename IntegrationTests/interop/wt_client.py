"""A WebTransport session with aioquic, for the tests of the HTTP/3 extension points.

  wt_client.py PORT

Opens a session (Extended CONNECT, :protocol webtransport, path /wt) on 127.0.0.1:PORT (authority localhost,
certificate not verified), then sends "bidi hello" on a bidirectional stream, "uni hello" on a unidirectional
stream and the datagram "dgram hello", each ending its stream, if the server's SETTINGS offer WebTransport.
Prints JSON: the CONNECT status, what came back on the bidirectional stream, on the server's unidirectional stream,
as a datagram, the server's SETTINGS and two of its transport parameters.
"""

import asyncio
import json
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection
from aioquic.h3.events import DatagramReceived, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.status = None
        self.streams = {}
        self.datagrams = []
        self.changed = asyncio.Event()

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                self.status = dict(ev.headers).get(b":status", b"?").decode()
            elif isinstance(ev, WebTransportStreamDataReceived):
                s = self.streams.setdefault(ev.stream_id, {"data": b"", "ended": False})
                s["data"] += ev.data
                s["ended"] = s["ended"] or ev.stream_ended
            elif isinstance(ev, DatagramReceived):
                self.datagrams.append(ev.data)
            self.changed.set()

    async def until(self, predicate):
        while not predicate():
            self.changed.clear()
            await self.changed.wait()


async def main(port):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536)
    config.verify_mode = ssl.CERT_NONE
    async with connect("127.0.0.1", port, configuration=config, create_protocol=Client) as c:
        session = c._quic.get_next_available_stream_id()
        c.h3.send_headers(session, [(b":method", b"CONNECT"), (b":protocol", b"webtransport"), (b":scheme", b"https"),
                                    (b":authority", b"localhost"), (b":path", b"/wt")])
        c.transmit()
        await asyncio.wait_for(c.until(lambda: c.status is not None), 10)
        result = {"status": c.status}
        # Only where the server announced WebTransport (aioquic would not refuse to try).
        offered = (c.h3.received_settings or {}).get(0x2B603742) == 1
        if c.status == "200" and offered:
            bidi = c.h3.create_webtransport_stream(session, is_unidirectional=False)
            # aioquic does not register the streams it opens, and would parse the server's bytes on them as frames.
            opened = c.h3._get_or_create_stream(bidi)
            opened.frame_type = FrameType.WEBTRANSPORT_STREAM
            opened.session_id = session
            c._quic.send_stream_data(bidi, b"bidi hello", end_stream=True)
            uni = c.h3.create_webtransport_stream(session, is_unidirectional=True)
            c._quic.send_stream_data(uni, b"uni hello", end_stream=True)
            c.h3.send_datagram(session, b"dgram hello")
            c.transmit()

            def done():
                ended = [s for s in c.streams.values() if s["ended"]]
                return len(ended) >= 2 and c.datagrams

            try:
                await asyncio.wait_for(c.until(done), 10)
            except asyncio.TimeoutError:
                pass
            result["bidi"] = c.streams.get(bidi, {}).get("data", b"").decode()
            result["uni"] = [s["data"].decode() for sid, s in c.streams.items() if sid != bidi]
            result["datagrams"] = [d.decode() for d in c.datagrams]
        received = c.h3.received_settings or {}
        result["settings"] = {"0x%x" % k: v for k, v in received.items()}
        result["transport"] = {"max_datagram_frame_size": c._quic._remote_max_datagram_frame_size,
                               "initial_max_streams_uni": c._quic._remote_max_streams_uni}
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")


asyncio.run(main(int(sys.argv[1])))
