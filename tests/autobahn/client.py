#!/usr/bin/env python3
"""syncws client for the Autobahn|Testsuite (wstest ``fuzzingserver``).

    python tests/autobahn/client.py [ws://127.0.0.1:9001] [--agent syncws]

Follows the Autobahn client protocol: read the number of cases from
``/getCaseCount``, then for N = 1..count connect to
``/runCase?case=N&agent=AGENT`` and echo every message until the server
closes, and last connect to ``/updateReports?agent=AGENT`` so that wstest
writes its reports.  The URL defaults to ``$AUTOBAHN_URL`` (set by
``run.py client``).

Exit status: 0 when every connection could be opened, 1 otherwise; the
verdict on each case is Autobahn's, in its reports.
"""

import argparse
import json
import logging
import os
import sys
import urllib.parse

import syncws


def run_case(base: str, case: int, agent: str) -> bool:
    """Run one case: echo until the server closes. Return False if it couldn't start."""
    uri = f"{base}/runCase?case={case}&agent={urllib.parse.quote(agent)}"
    try:
        with syncws.connect(uri, max_size=2**25, ping_interval=None) as ws:
            try:
                for message in ws:
                    ws.send(message)
            except syncws.ConnectionClosed:
                # Many cases end with a protocol error on purpose: the close
                # code is what Autobahn checks, not what we see here.
                pass
    except (syncws.WebSocketException, OSError) as exc:
        print(f"case {case}: {type(exc).__name__}: {exc}", flush=True)
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=os.environ.get("AUTOBAHN_URL", "ws://127.0.0.1:9001"))
    parser.add_argument("--agent", default="syncws")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    base = args.url.rstrip("/")
    agent = urllib.parse.quote(args.agent)

    with syncws.connect(f"{base}/getCaseCount") as ws:
        count = json.loads(ws.recv())
    print(f"{count} cases", flush=True)

    ok = True
    for case in range(1, count + 1):
        ok = run_case(base, case, args.agent) and ok

    # wstest writes the reports before it closes this connection, which may
    # take a while after a large selection.
    with syncws.connect(f"{base}/updateReports?agent={agent}", open_timeout=120, close_timeout=120) as ws:
        for _ in ws:
            pass
    print("reports updated", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
