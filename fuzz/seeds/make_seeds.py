#!/usr/bin/env python3
"""Writes the hand-made seeds of every corpus (fuzz/corpus/<target>/seed-*). Run from fuzz/."""
import base64, glob, gzip, json, os, struct, zlib

ROOT = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.dirname(ROOT)
REPO = os.path.dirname(FUZZ)

def write(target, name, data):
    d = os.path.join(FUZZ, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

def read(path):
    with open(os.path.join(REPO, path), "rb") as f:
        return f.read()

# http_request
reqs = {
    "get": b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n",
    "pipelined": b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "post-length": b"POST /api/auth/login HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "post-chunked": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "http10": b"GET / HTTP/1.0\r\n\r\n",
    "smuggle": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-lengths": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "huge-length": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n",
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "bad-version": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "expect": b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    "long-uri": b"GET /" + b"a" * 600 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    "gzip-te": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
}
for k, v in reqs.items():
    write("http_request", k, v)

# chunked_body
for k, v in {
    "simple": b"5\r\nhello\r\n0\r\n\r\n",
    "two-chunks-trailer": b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-T: 1\r\n\r\nNEXT",
    "over-limit": b"ff\r\n" + b"a" * 255 + b"\r\n0\r\n\r\n",
    "bad-size": b"zz\r\n",
    "huge-size": b"ffffffffffffffffff\r\n",
    "lf-only": b"1\na\n0\n\n",
}.items():
    write("chunked_body", k, v)

# ws_frames: first byte = flags (bit 0 deflate)
def frame(opcode, payload, fin=True, mask=b"\x01\x02\x03\x04", rsv1=False):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return head + mask + masked
def deflate(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]
for k, (flags, v) in {
    "text": (0, frame(1, b'{"op":"ping"}')),
    "fragments": (2, frame(1, b"hel", fin=False) + frame(0, b"lo")),
    "ping-close": (4, frame(9, b"p") + frame(8, b"\x03\xe8bye")),
    "unmasked": (0, bytes([0x81, 0x02]) + b"hi"),
    "bad-utf8": (0, frame(1, b"\xff\xfe")),
    "too-big": (0, frame(2, b"x" * 5000)),
    "deflate-text": (1, frame(1, deflate(b'{"op":"subscribe","channel":"c"}'), rsv1=True)),
    "deflate-bomb": (1, frame(1, deflate(b"a" * 100000), rsv1=True)),
    "bad-close-code": (0, frame(8, b"\x03\xed")),
}.items():
    write("ws_frames", k, bytes([flags]) + v)

# grpc_frames: first byte = flags (bit 0 gzip accepted, bit 1 re-encode compressed)
def gframe(msg, compressed=False):
    return bytes([1 if compressed else 0]) + struct.pack(">I", len(msg)) + msg
for k, v in {
    "plain": b"\x00" + gframe(b"\x0a\x03abc"),
    "two": b"\x02" + gframe(b"a") + gframe(b""),
    "gzip": b"\x01" + gframe(gzip.compress(b"hello world" * 10), True),
    "gzip-refused": b"\x00" + gframe(gzip.compress(b"x"), True),
    "gzip-bomb": b"\x01" + gframe(gzip.compress(b"\x00" * 1000000), True),
    "over-limit": b"\x00" + b"\x00" + struct.pack(">I", 70000),
    "bad-flag": b"\x00\x07\x00\x00\x00\x00",
    "partial": b"\x00\x00\x00\x00\x01\x00ab",
}.items():
    write("grpc_frames", k, v)

# grpc_status_details: first byte = code
write("grpc_status_details", "empty", b"\x00")
write("grpc_status_details", "text", b"\x01field: message")
write("grpc_status_details", "binary", b"\x02\x0a\x05hello\x12\x00")
write("grpc_status_details", "base64ish", b"\x03CAMSBWhlbGxv")

# access_token
def b64(d):
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode()
hdr = b64(b'{"alg":"EdDSA","typ":"JWT","kid":"k1"}')
body = b64(b'{"sub":"u1","iss":"sdsim","exp":1900000000,"sid":"s","roles":["user"]}')
write("access_token", "shape", f"{hdr}.{body}.{b64(bytes(64))}")
none = b64(b'{"alg":"none"}')
write("access_token", "none-alg", f"{none}.{body}.")
write("access_token", "two-parts", f"{hdr}.{body}")
write("access_token", "garbage", "not a token")
write("access_token", "bad-base64", "a.b!.c")

# design_document
for path in sorted(glob.glob(os.path.join(REPO, "config/designs/*.json"))):
    write("design_document", os.path.basename(path), read(path))
write("design_document", "not-json", "{")
write("design_document", "empty-object", "{}")
write("design_document", "wrong-types", '{"components": 3, "duration_s": "x"}')
write("design_document", "deep", '{"components":' + "[" * 100 + "]" * 100 + '}')

# servicegraph_metrics
write("servicegraph_metrics", "example.prom", read("docs/examples/servicegraph.prom"))
for k, v in {
    "one-edge": '# TYPE traces_service_graph_request_total counter\ntraces_service_graph_request_total{client="user",server="api"} 100\ntraces_service_graph_request_server_seconds_bucket{client="user",server="api",le="0.01"} 40\ntraces_service_graph_request_server_seconds_bucket{client="user",server="api",le="+Inf"} 100\ntraces_service_graph_request_server_seconds_sum{client="user",server="api"} 2.5\ntraces_service_graph_request_server_seconds_count{client="user",server="api"} 100\n',
    "namespaced-messaging": 'ns_traces_service_graph_request_total{client="api",server="q",connection_type="messaging_system"} 5\nns_traces_service_graph_request_total{client="user",server="api"} 4\nns_traces_service_graph_request_client_seconds_bucket{client="api",server="q",le="+Inf"} 5\nns_traces_service_graph_request_client_seconds_sum{client="api",server="q"} 0.5\nns_traces_service_graph_request_client_seconds_count{client="api",server="q"} 5\nns_traces_service_graph_request_server_seconds_bucket{client="user",server="api",le="+Inf"} 4\nns_traces_service_graph_request_server_seconds_sum{client="user",server="api"} 1\nns_traces_service_graph_request_server_seconds_count{client="user",server="api"} 4\n',
    "escapes": 'm{a="x\\\\y\\"z\\n",} -1.5e-3 -17\n# HELP m a \\\\ b\n',
    "negative": 'traces_service_graph_request_total{client="u",server="a"} -1\n',
    "not-cumulative": 'traces_service_graph_request_total{client="u",server="a"} 1\ntraces_service_graph_request_server_seconds_bucket{client="u",server="a",le="1"} 5\ntraces_service_graph_request_server_seconds_bucket{client="u",server="a",le="+Inf"} 1\n',
    "cycle": 'traces_service_graph_request_total{client="a",server="b"} 10\ntraces_service_graph_request_total{client="b",server="a"} 10\ntraces_service_graph_request_server_seconds_bucket{client="a",server="b",le="+Inf"} 10\ntraces_service_graph_request_server_seconds_sum{client="a",server="b"} 1\ntraces_service_graph_request_server_seconds_count{client="a",server="b"} 10\ntraces_service_graph_request_server_seconds_bucket{client="b",server="a",le="+Inf"} 10\ntraces_service_graph_request_server_seconds_sum{client="b",server="a"} 2\ntraces_service_graph_request_server_seconds_count{client="b",server="a"} 10\n',
    "bad-label": 'a{b="1" 2\n',
}.items():
    write("servicegraph_metrics", k, v)

# config_file
default = read("config/default.toml").decode()
write("config_file", "default.toml", default)
write("config_file", "sets", "--set runtime.shards=2\n--set ratelimit.enabled=false\n--set server.shutdown_timeout=2s\n")
write("config_file", "env", "SDSIM__RATELIMIT__BURST=7\n--set ratelimit.burst=9\n")
write("config_file", "unknown-key", "[ratelimit]\nbrust = 5\n")
write("config_file", "wrong-type", "[runtime]\nshards = \"lots\"\n")
write("config_file", "invalid", "roles = [\"gateway\", \"mailer\"]\n[gateway]\nlisten = \"nowhere\"\n[compression]\ngzip_level = 12\n")
write("config_file", "syntax", "[runtime\nshards=1\n")
write("config_file", "bad-set", "--set noequals\n")
write("config_file", "value-not-section", "--set roles.x=1\n")
write("config_file", "tiers", "[ratelimit]\ntiers = [{ window = \"1m\", limit = 100 }, { window = \"1h\", limit = 2000 }]\n")
write("config_file", "durations", "[http]\nidle_timeout = \"1.5s\"\nread_timeout = \"250ms\"\nwrite_timeout = 7\n")
write("config_file", "sub-ms-duration", '--set http.idle_timeout="0.5ms"\n--set runtime.stall_threshold=1.0000001\n')
write("config_file", "nan", "--set simulation.default_speed=nan\n--set ratelimit.rate_per_s=inf\n")
write("config_file", "floats", "--set simulation.default_speed=2.5\n--set ratelimit.rate_per_s=0.5\n")

# JSON bodies
for k, v in {
    "valid": '{"email":"a@example.com","password":"correct horse battery staple"}',
    "escaped": '{"password":"p\\u00e9\\n","email":"\\ud83d\\ude00@x"}',
    "missing": '{"email":"a@example.com"}',
    "unknown": '{"email":"a","password":"b","remember":true}',
    "wrong-type": '{"email":"a","password":5}',
    "array": '["a","b"]',
    "not-json": 'email=a&password=b',
    "duplicate": '{"email":"a","email":"b","password":"c"}',
}.items():
    write("auth_credentials", k, v)
for k, v in {
    "valid": '{"refresh_token":"abc.def"}',
    "null": '{"refresh_token":null}',
    "empty": '{}',
    "trailing": '{"refresh_token":"x"} x',
}.items():
    write("auth_refresh", k, v)
three_tier = read("config/designs/three-tier.json").decode()
for k, v in {
    "template": '{"name":"p","template_id":"three-tier"}',
    "design": '{"name":"p","description":"d","design":%s,"settings":{"a":1}}' % three_tier,
    "bad-design": '{"name":"p","design":{"components":[{"id":"x"}]}}',
    "no-name": '{"design":{}}',
    "name-number": '{"name":1}',
    "unknown": '{"name":"p","owner":"me"}',
    "deep-design": '{"name":"p","design":' + "[" * 100 + "]" * 100 + '}',
}.items():
    write("project_create", k, v)
for k, v in {
    "empty": '{}',
    "all": '{"name":"n","description":"d","design":%s,"settings":{},"expected_version":3}' % three_tier,
    "nulls": '{"name":null,"design":null,"expected_version":null}',
    "version-float": '{"expected_version":1.5}',
    "version-big": '{"expected_version":99999999999999999999}',
}.items():
    write("project_update", k, v)
for k, v in {
    "valid": '{"format":"sdsim.project.v1","name":"p","description":"d","design":%s,"settings":{"x":true},"template_id":null,"exported_at":1,"source_version":2}' % three_tier,
    "minimal": '{"format":"sdsim.project.v1","design":{}}',
    "wrong-format": '{"format":"other","design":{}}',
    "no-design": '{"format":"sdsim.project.v1","name":"p"}',
    "name-number": '{"format":"sdsim.project.v1","name":3,"design":{}}',
    "not-json": '{"format":',
    "array": '[1,2]',
    "deep": '{"format":"sdsim.project.v1","design":' + "{\"a\":" * 100 + "1" + "}" * 100 + '}',
}.items():
    write("project_import", k, v)
for k, v in {
    "valid": '{"project_id":"p1","duration_s":5,"seed":7,"speed":0}',
    "minimal": '{"project_id":"p1"}',
    "negative-seed": '{"project_id":"p1","seed":-1}',
    "huge-duration": '{"project_id":"p1","duration_s":1e400}',
    "string-speed": '{"project_id":"p1","speed":"fast"}',
    "exponent": '{"project_id":"p1","duration_s":1.5e2,"speed":-0.0}',
}.items():
    write("simulation_start", k, v)
others = [
    (0, "token", '{"token":"abc"}'),
    (1, "email", '{"email":"a@example.com"}'),
    (2, "reset", '{"token":"t","password":"p"}'),
    (3, "roles", '{"roles":["admin","user"]}'),
    (3, "roles-wrong", '{"roles":"admin"}'),
    (4, "share", '{"user":"u@example.com","role":"viewer"}'),
    (5, "rollback", '{"version":3}'),
    (5, "rollback-string", '{"version":"3"}'),
    (6, "template", '{"name":"t","design":%s}' % three_tier),
    (7, "validate", '{"design":%s}' % three_tier),
    (7, "validate-bad", '{"design":{"components":1}}'),
]
for which, k, v in others:
    write("other_json_bodies", k, bytes([which]) + v.encode())

# publish_body
for k, v in {
    "valid": '{"channel":"system:announcements","data":{"text":"hello","n":[1,2.5,null]}}',
    "string-data": '{"channel":"c","data":"\\u00e9\\n"}',
    "bad-channel": '{"channel":"no spaces","data":1}',
    "missing-data": '{"channel":"c"}',
    "channel-number": '{"channel":5,"data":1}',
    "unknown": '{"channel":"c","data":1,"ttl":3}',
    "deep": '{"channel":"c","data":' + "[" * 100 + "]" * 100 + '}',
}.items():
    write("publish_body", k, v)

# ws_client_message
for k, v in {
    "auth": '{"op":"auth","token":"abc"}',
    "subscribe": '{"op":"subscribe","channel":"simulation:data:1","since":42,"epoch":"e1"}',
    "unsubscribe": '{"op":"unsubscribe","channel":"c"}',
    "ping": '{"op":"ping"}',
    "unknown-op": '{"op":"pong"}',
    "no-op": '{"channel":"c"}',
    "extra": '{"op":"ping","x":1}',
    "since-string": '{"op":"subscribe","channel":"c","since":"42"}',
    "op-number": '{"op":1}',
    "not-json": 'ping',
    "deep": '{"op":"ping","x":' + "[" * 100 + "]" * 100 + '}',
}.items():
    write("ws_client_message", k, v)

# loadtest_scenario
for path in sorted(glob.glob(os.path.join(REPO, "loadtest/scenarios/*.toml"))):
    write("loadtest_scenario", os.path.basename(path), read(path))
for k, v in {
    "http-phases.toml": '[target]\nurl = "http://127.0.0.1:8000/health"\n[load]\nconnections = 4\n[[phases]]\nduration = "2s"\nrate = 100\nramp_to = 200\n',
    "bad-key.toml": '[target]\nurl = "http://x/"\n[load]\nconnection = 4\n',
    "zero-rate.toml": '[target]\nurl = "http://x/"\n[[phases]]\nduration = "1s"\nrate = 0\n',
    "ws-misplaced.toml": '[target]\nurl = "ws://127.0.0.1:8000/ws"\nprotocol = "ws"\nmethod = "GET"\n',
    "flow-min.toml": '[[phases]]\nduration = "1s"\nrate = 1\n[flow]\n[[flow.steps]]\nname = "a"\nkind = "http"\nurl = "http://localhost:8000/health"\n',
    "flow-capture.toml": '[[phases]]\nduration = "1s"\nrate = 1\n[flow]\nvars = { h = "http://127.0.0.1:1" }\n[[flow.steps]]\nname = "a"\nkind = "http"\nmethod = "POST"\nurl = "{{h}}/x"\nbody = \'{"a":"{{user}}"}\'\ncapture = { t = "/t" }\n[[flow.steps]]\nname = "b"\nkind = "think"\nduration = "10ms"\n[[flow.steps]]\nname = "c"\nkind = "grpc"\naddr = "127.0.0.1:9000"\nmethod = "sdsim.auth.v1.AuthService/Me"\nbearer = "{{t}}"\nexpect = ["OK", "not_found"]\n',
    "flow-dns.toml": '[[phases]]\nduration = "1s"\nrate = 1\n[flow]\n[[flow.steps]]\nname = "a"\nkind = "http"\nurl = "http://example.invalid:80/"\n',
    "flow-unknown-var.toml": '[[phases]]\nduration = "1s"\nrate = 1\n[flow]\n[[flow.steps]]\nname = "a"\nkind = "http"\nurl = "http://127.0.0.1:1/{{nope}}"\n',
    "both.toml": '[target]\nurl = "http://x/"\n[flow]\n',
    "syntax.toml": '[target\n',
}.items():
    write("loadtest_scenario", k, v)
