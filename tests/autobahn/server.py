#!/usr/bin/env python3
"""syncws echo server for the Autobahn|Testsuite (wstest ``fuzzingclient``).

    python tests/autobahn/server.py [--host 127.0.0.1] [--port 0]

Prints ``listening on ws://HOST:PORT`` once it accepts connections (with
``--port 0``, the default, the port is picked by the OS), then serves until
it is interrupted (SIGINT or SIGTERM).

The settings are the ones the suite needs: ``max_size=2**25`` because
Autobahn 9.x sends messages of up to 16 MiB, permessage-deflate on for the
groups 12 and 13, and no keepalive pings, which the suite does not expect.
"""

import argparse
import logging
import signal
import sys

import syncws


def echo(websocket: syncws.WebSocketCommonProtocol) -> None:
    """Send every message back, as it came (text as text, binary as binary)."""
    try:
        for message in websocket:
            websocket.send(message)
    except syncws.ConnectionClosed:
        # Most cases end with a protocol error on purpose (iterating raises
        # on any close but 1000/1001): Autobahn checks the close code, and
        # the server log is left for real errors.
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--no-compression", action="store_true", help="disable permessage-deflate")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    args = parser.parse_args()

    # Errors the suite provokes on purpose are logged by syncws; keep them
    # (they end up in the runner's server log) but at WARNING unless -v.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    with syncws.serve(
        echo,
        args.host,
        args.port,
        max_size=2**25,
        compression=None if args.no_compression else "deflate",
        ping_interval=None,
    ) as server:
        # SIGTERM (how the runner stops us) ends serve_forever like Ctrl-C.
        def terminate(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, terminate)
        print(f"listening on ws://{args.host}:{server.port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    sys.exit(main())
