"""WebTransport capsules (RFC 9297 framing) for the aioquic peers wt_peer.py and wt_server.py."""

from aioquic.buffer import Buffer

CLOSE_SESSION = 0x2843
DRAIN_SESSION = 0x78AE


def capsule(ctype, value):
    """One capsule: type, length, value."""
    buf = Buffer(capacity=16 + len(value))
    buf.push_uint_var(ctype)
    buf.push_uint_var(len(value))
    buf.push_bytes(value)
    return buf.data


def parse_capsules(data):
    """The complete capsules at the start of `data`, as (type, value) pairs."""
    out = []
    buf = Buffer(data=data)
    while not buf.eof():
        try:
            ctype = buf.pull_uint_var()
            length = buf.pull_uint_var()
            value = buf.pull_bytes(length)
        except Exception:
            break
        out.append((ctype, value))
    return out
