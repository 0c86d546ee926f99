"""A flood of QUIC Initial packets whose handshakes are never finished, for the robustness tests.

  quic_flood.py PORT COUNT [--bogus] [--sni NAME]

Sends COUNT genuine Initials (each from a fresh aioquic client connection: a real ClientHello, so the server
starts a handshake) to 127.0.0.1:PORT from one socket as fast as it can, never answering; with --bogus, Initials
with random payload instead. Then listens for half a second and prints JSON: how many were sent, how many
datagrams came back, and how many of those were Retry packets.
"""

import json
import os
import socket
import ssl
import sys
import time

from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

port, count = int(sys.argv[1]), int(sys.argv[2])
bogus = "--bogus" in sys.argv
sni = sys.argv[sys.argv.index("--sni") + 1] if "--sni" in sys.argv else "localhost"
config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=sni)
config.verify_mode = ssl.CERT_NONE
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
replies = retries = 0


def drain():
    global replies, retries
    while True:
        try:
            data = s.recv(2048)
        except BlockingIOError:
            return
        replies += 1
        if data[0] & 0xF0 == 0xF0:
            retries += 1




def initial():
    if bogus:
        dcid, scid = os.urandom(8), os.urandom(8)
        head = bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([8]) + dcid + bytes([8]) + scid + bytes([0])
        rest = 1200 - len(head) - 2
        return head + bytes([0x40 | (rest >> 8), rest & 0xFF]) + os.urandom(rest)
    c = QuicConnection(configuration=config)
    now = time.time()
    c.connect(("127.0.0.1", port), now=now)
    return c.datagrams_to_send(now=now)[0][0]


for i in range(count):
    packet = initial()
    try:
        s.sendto(packet, ("127.0.0.1", port))
    except BlockingIOError:
        time.sleep(0.001)
    if i % 64 == 0:
        drain()
deadline = time.time() + 0.5
while time.time() < deadline:
    drain()
    time.sleep(0.01)
print(json.dumps({"sent": count, "replies": replies, "retries": retries}))
