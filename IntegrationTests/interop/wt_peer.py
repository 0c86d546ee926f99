"""A WebTransport client on aioquic that exercises a session end to end, for the WebTransport tests.

  wt_peer.py PORT MODE [ARG]

Connects to 127.0.0.1:PORT (authority localhost, certificate not verified) and sends an Extended CONNECT
(:protocol webtransport, path /wt). Prints one JSON object. MODE:

  echo N SIZE   against an echoing server (usher's test handler `http.handlers.webtransport`, or wt_server.py):
                N bidirectional streams of SIZE random bytes each (SHA-256 compared with what comes back), a
                unidirectional stream both ways, a server-opened bidirectional stream, 1000 datagrams, a stream
                reset whose code must come back, then asks the server to close with code 4242 and a reason.
  close         opens a session and closes it from the client with WT_CLOSE_SESSION (code 77, reason "client says
                bye") and FIN.
  hold          opens a session and prints {"status": ...}; then reads commands from stdin: "echo" (a small
                bidirectional echo, printed as {"echo": ...}), "drained?" (whether WT_DRAIN_SESSION came), anything
                else closes the session. Ends early, printing how, if the server ends the session.
  sessions K    K sessions at once (one connection each), each echoing one bidirectional stream.
  status [PATH] the CONNECT's response status and fields only (path /wt unless given).
  settings      no CONNECT: the server's control stream bytes up to its SETTINGS frame (hex), the SETTINGS as
                parsed, and its transport parameters max_datagram_frame_size and initial_max_streams_uni.
"""

import asyncio
import hashlib
import json
import os
import ssl
import struct
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection
from aioquic.h3.events import DataReceived, DatagramReceived, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamDataReceived, StreamReset

from wt_wire import CLOSE_SESSION, DRAIN_SESSION, capsule, parse_capsules


def say(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.status = None
        self.fields = {}
        self.session = None
        self.session_data = b""
        self.session_ended = False
        self.streams = {}
        self.resets = {}
        self.datagrams = []
        self.changed = asyncio.Event()
        self.control = b""

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived) and event.stream_id == 3:
            # The server's first unidirectional stream: nghttp3 opens its control stream first.
            self.control += event.data
        if isinstance(event, StreamReset):
            self.resets[event.stream_id] = event.error_code
            self.changed.set()
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived) and ev.stream_id == self.session:
                self.fields = {k.decode(): v.decode() for k, v in ev.headers}
                self.status = self.fields.get(":status", "?")
                if ev.stream_ended:
                    self.session_ended = True
            elif isinstance(ev, DataReceived) and ev.stream_id == self.session:
                self.session_data += ev.data
                self.session_ended = self.session_ended or ev.stream_ended
            elif isinstance(ev, WebTransportStreamDataReceived):
                s = self.streams.setdefault(ev.stream_id, {"data": b"", "ended": False})
                s["data"] += ev.data
                s["ended"] = s["ended"] or ev.stream_ended
            elif isinstance(ev, DatagramReceived):
                self.datagrams.append(ev.data)
        self.changed.set()

    async def until(self, predicate, timeout=10):
        async def wait():
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(wait(), timeout)

    async def open_session(self, path="/wt"):
        self.session = self._quic.get_next_available_stream_id()
        self.h3.send_headers(self.session, [(b":method", b"CONNECT"), (b":protocol", b"webtransport"), (b":scheme", b"https"),
                                            (b":authority", b"localhost"), (b":path", path.encode()),
                                            (b"origin", b"https://localhost"), (b"sec-webtransport-http3-draft02", b"1"),
                                            (b"wt-available-protocols", b'"chat", "v2"')])
        self.transmit()
        await self.until(lambda: self.status is not None)
        return self.status

    def open_stream(self, unidirectional=False):
        sid = self.h3.create_webtransport_stream(self.session, is_unidirectional=unidirectional)
        if not unidirectional:
            # aioquic does not register the bidirectional streams it opens, and would parse the peer's bytes on
            # them as HTTP/3 frames.
            opened = self.h3._get_or_create_stream(sid)
            opened.frame_type = FrameType.WEBTRANSPORT_STREAM
            opened.session_id = self.session
        return sid

    def close_session(self, code, reason):
        self._quic.send_stream_data(self.session, self.h3_data_frame(capsule(CLOSE_SESSION, struct.pack("!I", code) + reason.encode())),
                                    end_stream=True)
        self.transmit()

    @staticmethod
    def h3_data_frame(payload):
        buf = Buffer(capacity=16 + len(payload))
        buf.push_uint_var(FrameType.DATA)
        buf.push_uint_var(len(payload))
        buf.push_bytes(payload)
        return buf.data

    def peer_close(self):
        for ctype, value in parse_capsules(self.session_data):
            if ctype == CLOSE_SESSION and len(value) >= 4:
                return {"code": struct.unpack("!I", value[:4])[0], "reason": value[4:].decode()}
        return None


def config():
    c = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536)
    c.verify_mode = ssl.CERT_NONE
    c.max_stream_data = 4 << 20
    c.max_data = 64 << 20
    return c


async def echo(c, n, size):
    result = {}
    payloads = {}
    for _ in range(n):
        sid = c.open_stream()
        data = os.urandom(size)
        payloads[sid] = hashlib.sha256(data).hexdigest()
        c._quic.send_stream_data(sid, data, end_stream=True)
    uni = c.open_stream(unidirectional=True)
    c._quic.send_stream_data(uni, b"uni hello", end_stream=True)
    ask = c.open_stream(unidirectional=True)
    c._quic.send_stream_data(ask, b"open bidi", end_stream=True)
    c.transmit()

    def bidi_done():
        return all(c.streams.get(s, {}).get("ended") for s in payloads)

    await c.until(bidi_done, 60)
    result["bidi_intact"] = sum(1 for s, h in payloads.items() if hashlib.sha256(c.streams[s]["data"]).hexdigest() == h)
    # The server's bidirectional stream: answer it, and the answer comes back on a unidirectional stream.
    await c.until(lambda: any(s % 4 == 1 and v["ended"] for s, v in c.streams.items()))
    server_bidi = [s for s, v in c.streams.items() if s % 4 == 1][0]
    result["server_bidi"] = c.streams[server_bidi]["data"].decode()
    c._quic.send_stream_data(server_bidi, b"client reply", end_stream=True)
    c.transmit()
    await c.until(lambda: sum(1 for s, v in c.streams.items() if s % 4 == 3 and v["ended"]) >= 2)
    result["uni_back"] = sorted(v["data"].decode() for s, v in c.streams.items() if s % 4 == 3)
    # Datagrams, in bursts of 20 every 5 ms (4,000/s) so the send side does not just queue them all at once.
    for i in range(1000):
        c.h3.send_datagram(c.session, b"dgram %04d" % i)
        if i % 20 == 19:
            c.transmit()
            await asyncio.sleep(0.005)
    c.transmit()
    try:
        await c.until(lambda: len(c.datagrams) >= 1000, 3)
    except asyncio.TimeoutError:
        pass
    result["datagrams_back"] = len(set(c.datagrams))
    # A reset, with a code the echo sends back.
    rs = c.open_stream()
    c._quic.send_stream_data(rs, b"about to reset")
    c.transmit()
    await c.until(lambda: len(c.streams.get(rs, {}).get("data", b"")) >= 14)
    code = 0x52E4A40FA8DB + 9
    c._quic.reset_stream(rs, code)
    c.transmit()
    await c.until(lambda: rs in c.resets)
    result["reset_sent"] = code
    result["reset_back"] = c.resets[rs]
    # The server closes the session when asked, with our code and reason.
    c.h3.send_datagram(c.session, b"close:4242:done with the echo")
    c.transmit()
    await c.until(lambda: c.session_ended)
    result["server_close"] = c.peer_close()
    return result


async def one_session(port, work, path="/wt"):
    async with connect("127.0.0.1", port, configuration=config(), create_protocol=Client) as c:
        status = await c.open_session(path)
        out = {"status": status, "fields": {k: v for k, v in c.fields.items() if not k.startswith(":")}}
        if status == "200":
            out.update(await work(c))
        return out


async def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "echo":
        n, size = int(sys.argv[3]), int(sys.argv[4])
        result = await one_session(port, lambda c: echo(c, n, size))
    elif mode == "close":
        async def work(c):
            c.close_session(77, "client says bye")
            await c.until(lambda: c.session_ended)
            return {"closed": True}
        result = await one_session(port, work)
    elif mode == "hold":
        async def work(c):
            say({"status": c.status})
            loop = asyncio.get_running_loop()
            while True:
                line = loop.run_in_executor(None, sys.stdin.readline)
                ended = asyncio.ensure_future(c.until(lambda: c.session_ended, 3600))
                done, _ = await asyncio.wait([line, ended], return_when=asyncio.FIRST_COMPLETED)
                if ended in done:
                    return {"ended_by_server": True, "server_close": c.peer_close(),
                            "drained": DRAIN_SESSION in [t for t, _ in parse_capsules(c.session_data)]}
                ended.cancel()
                command = (await line).strip()
                if command == "echo":
                    sid = c.open_stream()
                    c._quic.send_stream_data(sid, b"still here", end_stream=True)
                    c.transmit()
                    try:
                        await c.until(lambda: c.streams.get(sid, {}).get("ended"), 5)
                        say({"echo": c.streams[sid]["data"].decode()})
                    except asyncio.TimeoutError:
                        say({"echo": None})
                elif command == "drained?":
                    say({"drained": DRAIN_SESSION in [t for t, _ in parse_capsules(c.session_data)]})
                else:
                    c.close_session(0, "")
                    await c.until(lambda: c.session_ended)
                    return {"closed": True}
        result = await one_session(port, work)
    elif mode == "sessions":
        k = int(sys.argv[3])

        async def work(c):
            sid = c.open_stream()
            data = os.urandom(1000)
            c._quic.send_stream_data(sid, data, end_stream=True)
            c.transmit()
            await c.until(lambda: c.streams.get(sid, {}).get("ended"), 30)
            ok = c.streams[sid]["data"] == data
            return {"ok": ok}

        done = await asyncio.gather(*(one_session(port, work) for _ in range(k)), return_exceptions=True)
        result = {"sessions": k, "ok": sum(1 for d in done if isinstance(d, dict) and d.get("ok")),
                  "errors": [repr(d) for d in done if not isinstance(d, dict)][:3]}
    elif mode == "settings":
        async with connect("127.0.0.1", port, configuration=config(), create_protocol=Client) as c:
            await c.until(lambda: c.h3.received_settings is not None)
            # Stream type, then the SETTINGS frame (type 4, length, payload).
            buf = Buffer(data=c.control)
            buf.pull_uint_var()
            assert buf.pull_uint_var() == 4
            length = buf.pull_uint_var()
            end = buf.tell() + length
            result = {"control_hex": c.control[:end].hex(),
                      "settings": {"0x%x" % k: v for k, v in c.h3.received_settings.items()},
                      "max_datagram_frame_size": c._quic._remote_max_datagram_frame_size,
                      "initial_max_streams_uni": c._quic._remote_max_streams_uni}
    elif mode == "status":
        result = await one_session(port, lambda c: asyncio.sleep(0, result={}), sys.argv[3] if len(sys.argv) > 3 else "/wt")
    else:
        raise SystemExit("unknown mode " + mode)
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
