#!/usr/bin/env python3
"""Revocation delay: logs in and out N times against a running sdsim and prints the
`sdsim_auth_revocation_delay_seconds` histogram (publication on the logging-out shard to
application on every shard) from /metrics.

    taskset -c 0 target/release/sdsim serve --set runtime.cpus=[0,0] --set ratelimit.enabled=false &
    taskset -c 1 python3 bench/revocation_delay.py --url http://127.0.0.1:8000 --n 100
"""
import argparse, json, time, urllib.error, urllib.request, uuid


def post(base, path, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(base + path, data=data, method="POST")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req) as f:
            return f.status, f.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--n", type=int, default=100)
    a = ap.parse_args()
    email = f"rev-{uuid.uuid4().hex[:8]}@example.com"
    password = "correct horse battery staple"
    status, body = post(a.url, "/api/auth/register", {"email": email, "password": password})
    assert status == 201, body
    began = time.time()
    for _ in range(a.n):
        status, body = post(a.url, "/api/auth/login", {"email": email, "password": password})
        assert status == 200, body
        status, body = post(a.url, "/api/auth/logout", None, json.loads(body)["access_token"])
        assert status == 204, body
    print(f"{a.n} login + logout in {time.time() - began:.1f} s")
    metrics = urllib.request.urlopen(a.url + "/metrics").read().decode()
    for line in metrics.splitlines():
        if line.startswith("sdsim_auth_revocation_delay_seconds"):
            print(line)


if __name__ == "__main__":
    main()
