#!/usr/bin/env python3
"""An OTLP/HTTP trace receiver for the tests: decodes each `POST /v1/traces` body
(`application/x-protobuf`) with the `opentelemetry-proto` package's generated messages and
prints one JSON line per span on standard output.

    python3 tests/python/otlp_receiver.py [--port N]   (0, the default: a free port)

The first line is `listening <port>`. Each span line has `service` (the resource's
service.name), `trace_id`, `span_id`, `parent_span_id` (hex, "" for a root), `name`, `kind`
(the SpanKind name, e.g. SPAN_KIND_SERVER), `attributes` (key -> value), `status_code` (e.g.
STATUS_CODE_ERROR) and `flags`. `--status N` answers every request with HTTP N instead of 200
(to test failures).
"""

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def span_lines(request):
    for resource_spans in request.resource_spans:
        resource = {
            kv.key: value_of(kv.value) for kv in resource_spans.resource.attributes
        }
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield {
                    "service": resource.get("service.name"),
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": trace_pb2.Span.SpanKind.Name(span.kind),
                    "attributes": {kv.key: value_of(kv.value) for kv in span.attributes},
                    "status_code": trace_pb2.Status.StatusCode.Name(span.status.code),
                    "flags": span.flags,
                    "start": span.start_time_unix_nano,
                    "end": span.end_time_unix_nano,
                }


def handler(status):
    class Receiver(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/traces":
                return self.answer(404, b"")
            if self.headers.get("Content-Type") != "application/x-protobuf":
                return self.answer(415, b"")
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            for line in span_lines(request):
                print(json.dumps(line), flush=True)
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.answer(status, answer)

        def answer(self, code, body):
            self.send_response(code)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Receiver


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--status", type=int, default=200)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(args.status))
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
