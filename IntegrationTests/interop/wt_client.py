"""A WebTransport session with aioquic, for the tests of the HTTP/3 extension points.

  wt_client.py PORT

Opens a session (Extended CONNECT, :protocol webtransport, path /wt) on 127.0.0.1:PORT (authority localhost,
certificate not verified), then sends "bidi hello" on a bidirectional stream, "uni hello" on a unidirectional
stream and the datagram "dgram hello", each ending its stream, if the server's SETTINGS offer WebTransport.
Prints JSON: the CONNECT status, what came back on the bidirectional stream, on the server's unidirectional stream,
as a datagram, the server's SETTINGS and two of its transport parameters. The client is wt_peer.py's.
"""

import asyncio
import json
import sys

from aioquic.asyncio import connect

from wt_peer import Client, config


async def main(port):
    async with connect("127.0.0.1", port, configuration=config(), create_protocol=Client) as c:
        await c.open_session()
        result = {"status": c.status}
        # Only where the server announced WebTransport (aioquic would not refuse to try).
        offered = (c.h3.received_settings or {}).get(0x2B603742) == 1
        if c.status == "200" and offered:
            bidi = c.open_stream()
            c._quic.send_stream_data(bidi, b"bidi hello", end_stream=True)
            uni = c.open_stream(unidirectional=True)
            c._quic.send_stream_data(uni, b"uni hello", end_stream=True)
            c.h3.send_datagram(c.session, b"dgram hello")
            c.transmit()
            try:
                await c.until(lambda: sum(1 for s in c.streams.values() if s["ended"]) >= 2 and c.datagrams)
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
