#!/usr/bin/env python3
"""gRPC server reflection from a Python client that has no .proto file of sdsim's.

grpcio-reflection's descriptor database (reflection v1alpha) lists the services of the auth
listener and resolves ValidateToken's descriptors; a message class built from them calls the
method (a dynamic call, as grpcurl and Postman make). The v1 method is asked the same questions
through a raw stream (the messages are the same on the wire), including an unknown symbol.
Exits non-zero, naming what differed, on the first failure.
"""

import argparse
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

EXPECTED = {
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "sdsim.auth.v1.AuthService",
}


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)
    print(f"ok: {message}")


def v1alpha(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    check(services == EXPECTED, f"v1alpha lists the auth listener's services: {sorted(services)}")
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindMethodByName("sdsim.auth.v1.AuthService.ValidateToken")
    check(
        method.input_type.full_name == "sdsim.auth.v1.ValidateTokenRequest",
        f"ValidateToken takes {method.input_type.full_name}",
    )
    fields = [f.name for f in method.input_type.fields]
    check(fields == ["token", "calling_service"], f"its request's fields: {fields}")
    output = method.output_type
    check(
        output.full_name == "sdsim.auth.v1.ValidateTokenResponse",
        f"and returns {output.full_name}",
    )
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(output)
    call = channel.unary_unary(
        "/sdsim.auth.v1.AuthService/ValidateToken",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    try:
        reply = call(request_class(token="not-a-token", calling_service="reflection"), timeout=10)
        print(f"ok: a dynamic call answered: {reply}")
    except grpc.RpcError as e:
        # An answer from the method (e.g. UNAUTHENTICATED) is an answer: the call reached it.
        check(
            e.code() not in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL),
            f"a dynamic call reached the method: {e.code()} {e.details()}",
        )


def v1(channel):
    stream = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="sdsim.auth.v1.NoSuchThing"),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="sdsim.auth.v1.AuthService.ValidateToken"
        ),
        # Sent already on this stream: asked again, the file itself comes again.
        reflection_pb2.ServerReflectionRequest(file_by_filename="sdsim/auth/v1/auth.proto"),
    ]
    answers = list(stream(iter(requests), timeout=10))
    check(len(answers) == len(requests), f"v1 answers each request: {len(answers)}")
    listed = {s.name for s in answers[0].list_services_response.service}
    check(listed == EXPECTED, f"v1 lists the same services: {sorted(listed)}")
    error = answers[1].error_response
    check(
        error.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        and "sdsim.auth.v1.NoSuchThing" in error.error_message,
        f"an unknown symbol is NOT_FOUND, named: {error.error_code} {error.error_message!r}",
    )
    files = answers[2].file_descriptor_response.file_descriptor_proto
    check(len(files) == 1, f"a method's file comes whole: {len(files)} file(s)")
    again = answers[3].file_descriptor_response.file_descriptor_proto
    check(again == files, "the same file by its name")
    check(
        answers[2].original_request == requests[2],
        "each answer carries the request it answers",
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc", required=True, help="host:port of the auth gRPC listener")
    args = parser.parse_args()
    with grpc.insecure_channel(args.grpc) as channel:
        grpc.channel_ready_future(channel).result(timeout=20)
        v1alpha(channel)
        v1(channel)
    print("all reflection checks passed")


if __name__ == "__main__":
    main()
