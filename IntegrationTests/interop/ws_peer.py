"""WebSocket peers for the integration tests.

  ws_peer.py echo PORT              a `websockets` echo server on 127.0.0.1:PORT (prints "ready")
  ws_peer.py client URL             a `websockets` client over HTTP/1.1
  ws_peer.py h2client PORT PATH     a WebSocket over an HTTP/2 extended CONNECT (RFC 8441) on h2c, using `h2`

Clients speak a line protocol on stdin/stdout so a test can hold a connection open across other actions:
  stdin  "send TEXT"  -> stdout "recv TEXT" (the echo) or "closed CODE"
  stdin  "wait"       -> stdout "closed CODE" once the server closes the connection
"""

import asyncio
import os
import socket
import struct
import sys


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def echo_server(port):
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async def main():
        async with serve(echo, "127.0.0.1", port, compression=None):
            out("ready")
            await asyncio.Future()

    asyncio.run(main())


def ws_client(url):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(url, compression=None, open_timeout=10) as ws:
        out("open")
        for line in sys.stdin:
            cmd, _, arg = line.rstrip("\n").partition(" ")
            try:
                if cmd == "send":
                    ws.send(arg)
                    out("recv " + ws.recv(timeout=10))
                elif cmd == "wait":
                    ws.recv(timeout=30)
                    out("unexpected message")
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd is not None else 1006
                out("closed %d" % code)
                return
            except TimeoutError:
                out("timeout")


def frame(opcode, payload):
    """A masked client frame (RFC 6455 5.2)."""
    key = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def parse_frames(buf):
    """Complete unmasked server frames at the start of buf: ([(opcode, payload)], rest)."""
    frames = []
    while len(buf) >= 2:
        opcode = buf[0] & 0x0F
        n = buf[1] & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = struct.unpack("!H", buf[2:4])[0]
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = struct.unpack("!Q", buf[2:10])[0]
            pos = 10
        if len(buf) < pos + n:
            break
        frames.append((opcode, buf[pos:pos + n]))
        buf = buf[pos + n:]
    return frames, buf


def h2_client(port, path):
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    pending = b""
    stream = None
    status = None

    def pump(until):
        nonlocal pending, status
        while not until():
            data = sock.recv(65536)
            if not data:
                return False
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = dict(ev.headers).get(b":status")
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    pending += ev.data
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    pending += b"\x88\x02\x03\xee"  # no Close frame came: report 1006
                    return True
            sock.sendall(conn.data_to_send())
        return True

    # The server must allow extended CONNECT before the client may use it.
    pump(lambda: conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL) == 1)
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [
        (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"), (":path", path),
        (":authority", "127.0.0.1:%d" % port), ("sec-websocket-version", "13"),
    ])
    sock.sendall(conn.data_to_send())
    pump(lambda: status is not None)
    if status != b"200":
        out("status " + (status or b"none").decode())
        return
    out("open")

    queue = []

    def send_all(data):
        # Within the peer's frame size and flow-control windows.
        while data:
            window = min(conn.local_flow_control_window(stream), conn.max_outbound_frame_size)
            if window <= 0:
                before = conn.local_flow_control_window(stream)
                pump(lambda: conn.local_flow_control_window(stream) > before)
                continue
            conn.send_data(stream, data[:window])
            data = data[window:]
            sock.sendall(conn.data_to_send())

    def next_frame():
        nonlocal pending
        while not queue:
            frames, pending = parse_frames(pending)
            queue.extend(frames)
            if not queue and not pump(lambda: len(parse_frames(pending)[0]) > 0):
                return 8, b"\x03\xee"
        return queue.pop(0)

    for line in sys.stdin:
        cmd, _, arg = line.rstrip("\n").partition(" ")
        if cmd == "send":
            send_all(frame(1, arg.encode()))
        opcode, payload = next_frame()
        if opcode == 8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            out("closed %d" % code)
            return
        out("recv " + payload.decode())


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "echo":
        echo_server(int(sys.argv[2]))
    elif mode == "client":
        ws_client(sys.argv[2])
    elif mode == "h2client":
        h2_client(int(sys.argv[2]), sys.argv[3])
