"""A WebTransport echo server on aioquic, as the upstream of usher's reverse_proxy in the WebTransport tests.

  wt_server.py PORT CERT KEY EVENTS

Listens on 127.0.0.1:PORT and accepts WebTransport sessions (Extended CONNECT, :protocol webtransport), echoing
them as usher's test handler `http.handlers.webtransport` does (see wt_peer.py): bidirectional streams come back
on themselves, unidirectional ones on a new unidirectional stream ("open bidi" makes the server open a
bidirectional stream instead), datagrams come back, a stream reset comes back with its code, the datagram
`close:CODE:REASON` closes the session. The CONNECT's response carries x-echo-forwarded-for, x-echo-via and
x-echo-up (the request's X-Forwarded-For, Via and X-Up), and WT-Protocol the first of WT-Available-Protocols; a
CONNECT to /forbidden gets 403. Each session's end is appended to the file EVENTS as a
JSON line: {"closed": {"code": ..., "reason": ...}} (WT_CLOSE_SESSION from the client) or {"ended": true}.
"""

import asyncio
import json
import struct
import sys

from aioquic.asyncio import serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection
from aioquic.h3.events import DataReceived, DatagramReceived, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamReset

from wt_wire import CLOSE_SESSION, capsule, parse_capsules

EVENTS = None


def record(event):
    with open(EVENTS, "a") as f:
        f.write(json.dumps(event) + "\n")


class Server(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = None
        self.sessions = {}
        self.uni = {}
        self.opened = {}

    def quic_event_received(self, event):
        if self.h3 is None:
            self.h3 = H3Connection(self._quic, enable_webtransport=True)
        if isinstance(event, StreamReset) and event.stream_id % 4 == 0 and event.stream_id not in self.sessions:
            # Echo a reset of a bidirectional stream with its code.
            self._quic.reset_stream(event.stream_id, event.error_code)
            self.transmit()
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                h = dict(ev.headers)
                if h.get(b":path") == b"/forbidden":
                    self.h3.send_headers(ev.stream_id, [(b":status", b"403"), (b"x-served-by", b"aioquic")], end_stream=True)
                elif h.get(b":method") == b"CONNECT" and h.get(b":protocol") in (b"webtransport", b"webtransport-h3"):
                    self.sessions[ev.stream_id] = b""
                    self.h3.send_headers(ev.stream_id, [
                        (b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02"), (b"x-served-by", b"aioquic"),
                        (b"x-echo-forwarded-for", h.get(b"x-forwarded-for", b"")), (b"x-echo-via", h.get(b"via", b"")),
                        (b"x-echo-up", h.get(b"x-up", b"")),
                        (b"wt-protocol", h.get(b"wt-available-protocols", b"").split(b",")[0].strip())])
                else:
                    self.h3.send_headers(ev.stream_id, [(b":status", b"404")], end_stream=True)
            elif isinstance(ev, DataReceived) and ev.stream_id in self.sessions:
                self.sessions[ev.stream_id] += ev.data
                if ev.stream_ended:
                    self.session_ended(ev.stream_id)
            elif isinstance(ev, WebTransportStreamDataReceived):
                self.stream_data(ev)
            elif isinstance(ev, DatagramReceived):
                text = ev.data.decode(errors="replace")
                if text.startswith("close:"):
                    _, code, reason = text.split(":", 2)
                    self.h3.send_data(ev.stream_id, capsule(CLOSE_SESSION, struct.pack("!I", int(code)) + reason.encode()),
                                      end_stream=True)
                else:
                    self.h3.send_datagram(ev.stream_id, ev.data)
        self.transmit()

    def session_ended(self, sid):
        event = {"ended": True}
        for ctype, value in parse_capsules(self.sessions.pop(sid)):
            if ctype == CLOSE_SESSION:
                event = {"closed": {"code": struct.unpack("!I", value[:4])[0], "reason": value[4:].decode()}}
        record(event)
        try:
            self._quic.send_stream_data(sid, b"", end_stream=True)
        except Exception:
            pass

    def open(self, session, unidirectional):
        sid = self.h3.create_webtransport_stream(session, is_unidirectional=unidirectional)
        if not unidirectional:
            # aioquic does not register the bidirectional streams it opens (see wt_peer.py).
            s = self.h3._get_or_create_stream(sid)
            s.frame_type = FrameType.WEBTRANSPORT_STREAM
            s.session_id = session
        return sid

    def stream_data(self, ev):
        sid = ev.stream_id
        if sid in self.opened:
            # The client's answer on the bidirectional stream we opened.
            self.opened[sid] = (self.opened[sid][0], self.opened[sid][1] + ev.data)
            if ev.stream_ended:
                session, got = self.opened.pop(sid)
                out = self.open(session, True)
                self._quic.send_stream_data(out, b"reply:" + got, end_stream=True)
        elif sid % 4 == 0:
            self._quic.send_stream_data(sid, ev.data, end_stream=ev.stream_ended)
        else:
            self.uni[sid] = self.uni.get(sid, b"") + ev.data
            if ev.stream_ended:
                got = self.uni.pop(sid)
                if got == b"open bidi":
                    out = self.open(ev.session_id, False)
                    self.opened[out] = (ev.session_id, b"")
                    self._quic.send_stream_data(out, b"server bidi", end_stream=True)
                else:
                    out = self.open(ev.session_id, True)
                    self._quic.send_stream_data(out, got, end_stream=True)


async def main(port, cert, key):
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536)
    config.load_cert_chain(cert, key)
    config.max_stream_data = 4 << 20
    config.max_data = 64 << 20
    await serve("127.0.0.1", port, configuration=config, create_protocol=Server)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.Future()


EVENTS = sys.argv[4]
asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
