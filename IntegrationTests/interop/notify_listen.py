"""Stands in for systemd's notify socket, for the sd_notify tests.

  notify_listen.py PATH SECONDS

Binds a unix datagram socket at PATH and prints every message received (one JSON string per line, flushed) until
SECONDS have passed or a message contains STOPPING=1 (then it waits a further half second for stragglers).
"""

import json
import os
import socket
import sys
import time

path, seconds = sys.argv[1], float(sys.argv[2])
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(0.1)
sys.stdout.write(json.dumps("listening") + "\n")
sys.stdout.flush()
deadline = time.time() + seconds
while time.time() < deadline:
    try:
        data = s.recv(4096)
    except socket.timeout:
        continue
    text = data.decode()
    sys.stdout.write(json.dumps(text) + "\n")
    sys.stdout.flush()
    if "STOPPING=1" in text:
        deadline = min(deadline, time.time() + 0.5)
