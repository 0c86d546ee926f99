#!/usr/bin/env python3
"""HTTP/2 behaviours curl cannot show, driven by the hyper-h2 library over cleartext (prior knowledge).

Usage:
  h2_peer.py reset PORT BIG_PATH SMALL_PATH
      Opens a stream for BIG_PATH and one for SMALL_PATH, resets the big one (CANCEL) after its first DATA frame,
      then checks the small one completes and a new stream on the same connection still works.

Prints one JSON object with what happened.
"""
import json
import socket
import sys

import h2.config
import h2.connection
import h2.events


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def request(conn, sock, path):
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "127.0.0.1")],
                      end_stream=True)
    sock.sendall(conn.data_to_send())
    return sid


def pump(sock, conn, on_event, until):
    """Reads frames and hands events to on_event until until() is true or the connection closes."""
    while not until():
        data = sock.recv(65536)
        if not data:
            return False
        for event in conn.receive_data(data):
            on_event(event)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    return True


def reset_mode(port, big, small):
    sock, conn = connect(port)
    state = {"status": {}, "bytes": {}, "ended": set(), "reset_sent": False, "data_after_reset": 0}
    big_id = request(conn, sock, big)
    small_id = request(conn, sock, small)

    def on_event(e):
        if isinstance(e, h2.events.ResponseReceived):
            state["status"][e.stream_id] = dict(e.headers).get(":status")
        elif isinstance(e, h2.events.DataReceived):
            conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            state["bytes"][e.stream_id] = state["bytes"].get(e.stream_id, 0) + len(e.data)
            if e.stream_id == big_id:
                if state["reset_sent"]:
                    state["data_after_reset"] += len(e.data)
                else:
                    conn.reset_stream(big_id, error_code=8)  # CANCEL
                    state["reset_sent"] = True
        elif isinstance(e, h2.events.StreamEnded):
            state["ended"].add(e.stream_id)

    pump(sock, conn, on_event, lambda: small_id in state["ended"] and state["reset_sent"])
    third = request(conn, sock, small)
    ok = pump(sock, conn, on_event, lambda: third in state["ended"])
    sock.close()
    return {
        "reset_sent": state["reset_sent"],
        "small_status": state["status"].get(small_id),
        "small_bytes": state["bytes"].get(small_id, 0),
        "third_status": state["status"].get(third),
        "third_bytes": state["bytes"].get(third, 0),
        "connection_alive": ok,
        "big_bytes_before_end": state["bytes"].get(big_id, 0),
    }


def main():
    mode = sys.argv[1]
    if mode == "reset":
        result = reset_mode(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
