#!/usr/bin/env python3
"""Run the Autobahn|Testsuite against syncws, as a server, a client, or both.

    python3 tests/autobahn/run.py {server,client,both} [--quick | --compression | --all]
                                  [--cases P,...] [--exclude P,...] [--out DIR] [--timeout S]

Selections (the default is ``--quick``):

  --quick         groups 1-10 (``--exclude '12.*,13.*'``): about 30 s per mode
  --compression   groups 12 and 13, permessage-deflate: 10-15 min per mode
  --all           everything (517 cases)
  --cases/--exclude  wstest patterns, as for the suite's ``run.py``

This script starts the syncws peer (``server.py`` on a free port, or
``client.py`` as the command of the fuzzing server) and runs the suite's
``run.py`` from ``$SYNCWS_AUTOBAHN_DIR`` (default: ``shared/autobahn`` beside
the repository) with the venv made by its ``install.sh`` (``$AUTOBAHN_VENV``,
default ``/tmp/autobahn-venv``).  ``--install`` runs ``install.sh`` first.

The syncws under test is the one this interpreter imports, with the checkout
this script lives in first on ``PYTHONPATH``.

Exit status: 0 when no case FAILED and none is MISSING in any mode, 1
otherwise, 2 when the suite could not run.
"""

import argparse
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_SUITE = os.environ.get("SYNCWS_AUTOBAHN_DIR", os.path.join(os.path.dirname(REPO), "shared", "autobahn"))
DEFAULT_VENV = os.environ.get("AUTOBAHN_VENV", "/tmp/autobahn-venv")

SELECTIONS = {
    "quick": ([], ["12.*,13.*"], 600),
    "compression": (["12.*,13.*"], [], 2400),
    "all": ([], [], 3600),
}


def log(msg: str) -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def suite_args(args: argparse.Namespace, out: str) -> list:
    cases, exclude, timeout = SELECTIONS[args.selection]
    cases = args.cases or cases
    exclude = args.exclude if args.exclude is not None else exclude
    argv = ["--out", out, "--timeout", str(args.timeout or timeout), "--venv", args.venv]
    for p in cases:
        argv += ["--cases", p]
    for p in exclude:
        argv += ["--exclude", p]
    if args.verbose:
        argv.append("-v")
    return argv


def stop(proc: subprocess.Popen) -> None:
    """Stop the server we started: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_server_mode(args: argparse.Namespace, runpy: str, out: str) -> int:
    os.makedirs(out, exist_ok=True)
    server_log = os.path.join(out, "server.log")
    with open(server_log, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "server.py"), "--port", "0"],
            stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL, env=child_env(),
        )
    try:
        line = proc.stdout.readline().decode("utf-8", "replace").strip()
        if not line.startswith("listening on ws://"):
            stop(proc)
            with open(server_log, encoding="utf-8", errors="replace") as f:
                log(f.read()[-3000:])
            log(f"autobahn: the syncws server did not start (got {line!r})")
            return 2
        url = line.split()[-1]
        log(f"syncws server: {url} (log: {server_log})")
        rc = subprocess.call(
            [sys.executable, runpy, "server", "--url", url, "--agent", "syncws"] + suite_args(args, out),
            stdin=subprocess.DEVNULL,
        )
        if proc.poll() is not None:
            log(f"autobahn: the syncws server died during the run (exit {proc.returncode}); see {server_log}")
            rc = rc or 1
        return rc
    finally:
        stop(proc)
        proc.stdout.close()
        report_log(server_log)


def report_log(path: str) -> None:
    """Point at errors the server logged (the echo handler catches the expected ones)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return
    tracebacks = text.count("Traceback (most recent call last)")
    if tracebacks:
        first = text[text.index("Traceback (most recent call last)"):].splitlines()[:25]
        log(f"syncws server logged {tracebacks} traceback(s), see {path}; the first:")
        for line in first:
            log("  server| " + line)


def run_client_mode(args: argparse.Namespace, runpy: str, out: str) -> int:
    port = free_port()
    client = os.path.join(HERE, "client.py")
    cmd = f"exec {sys.executable} {client} ws://127.0.0.1:{port} --agent syncws"
    return subprocess.call(
        [sys.executable, runpy, "client", "--port", str(port), "--cmd", cmd, "--agent", "syncws"]
        + suite_args(args, out),
        stdin=subprocess.DEVNULL,
        env=child_env(),
    )


def run_parallel(args: argparse.Namespace, modes: list, out: str) -> dict:
    """Run each mode in a child process of this script, at the same time.

    The modes share nothing (each has its own ports and output directory);
    on a machine with two cores or more this takes the time of the slower
    mode instead of the sum.  The children's output goes to
    ``OUT/MODE.log`` and is printed, one mode after the other, at the end;
    meanwhile a line per minute says how far each has got.
    """
    argv = ["--" + args.selection, "--out", out, "--suite", args.suite, "--venv", args.venv]
    for p in args.cases or []:
        argv += ["--cases", p]
    for p in args.exclude or []:
        argv += ["--exclude", p]
    if args.timeout:
        argv += ["--timeout", str(args.timeout)]
    os.makedirs(out, exist_ok=True)
    children = {}
    t0 = time.monotonic()
    for mode in modes:
        logfile = os.path.join(out, f"{mode}.log")
        with open(logfile, "wb") as f:
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), mode] + argv,
                                    stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        children[mode] = (proc, logfile)
        log(f"autobahn {mode} mode ({args.selection}): started, output in {logfile}")
    last = time.monotonic()
    ended = {}
    while len(ended) < len(children):
        time.sleep(1)
        for mode, (proc, _) in children.items():
            if mode not in ended and proc.poll() is not None:
                ended[mode] = time.monotonic() - t0
        if time.monotonic() - last >= 60:
            last = time.monotonic()
            for mode, (proc, logfile) in children.items():
                state = "running" if proc.poll() is None else f"done (exit {proc.returncode})"
                log(f"  {mode}: {state}, {last_line(logfile)}")
    results = {}
    for mode, (proc, logfile) in children.items():
        with open(logfile, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        # The child's own one-mode summary is repeated below: leave it out.
        if "==== autobahn summary ====" in lines:
            lines = lines[:lines.index("==== autobahn summary ====")]
        for line in lines:
            if "cases started" not in line:
                log(line)
        results[mode] = (proc.returncode, ended[mode])
    return results


def last_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f.read().splitlines() if line.strip()]
    except OSError:
        return "no output yet"
    return lines[-1] if lines else "no output yet"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["server", "client", "both"])
    sel = parser.add_mutually_exclusive_group()
    for name in SELECTIONS:
        sel.add_argument(f"--{name}", dest="selection", action="store_const", const=name)
    parser.set_defaults(selection="quick")
    parser.add_argument("--cases", action="append", help="case patterns (override the selection)")
    parser.add_argument("--exclude", action="append", help="case patterns to leave out (override the selection)")
    parser.add_argument("--out", help="output directory (default: a new /tmp/syncws-autobahn-*); one subdirectory per mode")
    parser.add_argument("--timeout", type=float, help="hard limit per mode, seconds (default per selection)")
    parser.add_argument("--suite", default=DEFAULT_SUITE, help=f"the suite's directory (default {DEFAULT_SUITE})")
    parser.add_argument("--venv", default=DEFAULT_VENV, help=f"the suite's venv (default {DEFAULT_VENV})")
    parser.add_argument("--install", action="store_true", help="run the suite's install.sh first")
    parser.add_argument("--parallel", action="store_true",
                        help="with 'both': run the two modes at the same time (each in a process of its own)")
    parser.add_argument("-v", "--verbose", action="store_true", help="stream wstest's output")
    args = parser.parse_args()

    runpy = os.path.join(args.suite, "run.py")
    if not os.path.isfile(runpy):
        log(f"autobahn: {runpy} not found (set SYNCWS_AUTOBAHN_DIR or --suite)")
        return 2
    if args.install:
        env = dict(os.environ, AUTOBAHN_VENV=args.venv)
        if subprocess.call(["bash", os.path.join(args.suite, "install.sh")], env=env, stdin=subprocess.DEVNULL):
            log("autobahn: install.sh failed")
            return 2
    if not os.access(os.path.join(args.venv, "bin", "wstest"), os.X_OK):
        log(f"autobahn: no wstest in {args.venv}: run 'bash {args.suite}/install.sh' or pass --install")
        return 2

    out = args.out or f"/tmp/syncws-autobahn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    modes = ["server", "client"] if args.mode == "both" else [args.mode]
    if args.parallel and len(modes) > 1:
        results = run_parallel(args, modes, out)
    else:
        results = {}
        for mode in modes:
            log(f"==== autobahn {mode} mode ({args.selection}) ====")
            t0 = time.monotonic()
            run = run_server_mode if mode == "server" else run_client_mode
            results[mode] = (run(args, runpy, os.path.join(out, mode)), time.monotonic() - t0)
    log("==== autobahn summary ====")
    for mode, (rc, elapsed) in results.items():
        verdict = "passed" if rc == 0 else ("FAILED" if rc == 1 else f"ERROR (exit {rc})")
        log(f"autobahn {mode} mode ({args.selection}): {verdict} in {elapsed:.0f} s, output in {os.path.join(out, mode)}")
    return max(rc for rc, _ in results.values())


if __name__ == "__main__":
    sys.exit(main())
