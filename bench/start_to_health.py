#!/usr/bin/env python3
"""How long `sdsim serve` takes from exec to its first `200` on `GET /health`.

Each run starts the binary on the embedded default (a fresh SQLite directory, so the
migrations run too) with every listener on a free loopback port, polls `/health` every 2 ms
with a new connection, and stops the server with SIGTERM once it answered. Prints each run's
time, the median and the maximum.

    python3 bench/start_to_health.py target/release/sdsim 7
"""
import socket
import statistics
import subprocess
import sys
import tempfile
import time

LISTENERS = [
    "auth.http_listen", "auth.grpc_listen", "project.http_listen", "project.grpc_listen",
    "simulation.http_listen", "simulation.grpc_listen",
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def healthy(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return c.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def one_start(binary):
    data = tempfile.mkdtemp(prefix="sdsim-start-")
    port = free_port()
    sets = [f"gateway.listen=127.0.0.1:{port}", f"storage.url=sqlite://{data}/sdsim.db"]
    sets += [f"{key}=127.0.0.1:{free_port()}" for key in LISTENERS]
    args = [binary, "serve"] + [a for s in sets for a in ("--set", s)]
    started = time.monotonic()
    server = subprocess.Popen(args, cwd=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not healthy(port):
            if server.poll() is not None:
                sys.exit(f"sdsim exited with {server.returncode} before answering /health")
            if time.monotonic() - started > 30:
                sys.exit("no 200 on /health within 30 s")
            time.sleep(0.002)
        return time.monotonic() - started
    finally:
        server.terminate()
        server.wait()


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/sdsim"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    times = [one_start(binary) for _ in range(runs)]
    print("start to the first 200 on /health (s):", " ".join(f"{t:.3f}" for t in times))
    print(f"median {statistics.median(times):.3f} s, max {max(times):.3f} s, runs {runs}")


if __name__ == "__main__":
    main()
