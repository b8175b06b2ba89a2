#!/usr/bin/env python3
"""sdsim's AuthService seen from a grpcio client, as another team's Python service would call it.

Stubs are generated at run time with grpcio-tools from the repository's proto/ directory, so the
check always runs against the .proto files in this checkout (no generated code is checked in).

Flow: register and log in over HTTP, call every AuthService RPC (the account RPCs with a second
account of their own) and grpc.health.v1 Check, then log out over HTTP and wait for
ValidateToken to report the token revoked. One line per check on
stdout; the first failure is printed on stderr and the exit code is 1.

    python3 tests/python/auth_client.py --grpc 127.0.0.1:9000 --http 127.0.0.1:8000

Needs: python3 -m pip install "grpcio==1.*" "grpcio-tools==1.*"  (./test.sh does it).
"""

import argparse
import base64
import importlib
import json
import pathlib
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import grpc
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"
AUTH_PROTO = "sdsim/auth/v1/auth.proto"
HEALTH_DIR = PROTO_ROOT / "grpc" / "health" / "v1"
AUTH_SERVICE = "sdsim.auth.v1.AuthService"
PASSWORD = "correct horse battery staple"
USER_PERMISSIONS = ["project:read", "project:write", "simulation:start"]
RPC_TIMEOUT_S = 5.0
REVOCATION_WAIT_S = 2.0


class CheckFailed(Exception):
    """A check whose answer was not the expected one."""


def check(name, condition, detail=""):
    if not condition:
        raise CheckFailed(f"{name}: {detail}" if detail else name)
    print(f"ok    {name}", flush=True)


def generate_stubs(out_dir):
    """Runs protoc for auth.proto and health.proto into out_dir; returns their modules.

    health.proto is compiled from its own directory, as top-level `health_pb2`: under its
    proto path it would become the Python package `grpc.health.v1`, which the installed `grpc`
    package shadows. Its proto package (and so the method paths on the wire) stays
    grpc.health.v1 either way.
    """
    for include, proto in [(PROTO_ROOT, AUTH_PROTO), (HEALTH_DIR, "health.proto")]:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"--proto_path={include}",
                f"--python_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                str(proto),
            ]
        )
        if code != 0:
            raise SystemExit(f"FAIL  protoc could not compile {include / proto} (exit {code})")
    sys.path.insert(0, str(out_dir))
    return (
        importlib.import_module("sdsim.auth.v1.auth_pb2"),
        importlib.import_module("sdsim.auth.v1.auth_pb2_grpc"),
        importlib.import_module("health_pb2"),
        importlib.import_module("health_pb2_grpc"),
    )


def http(base, method, path, body=None, token=None):
    """One HTTP request; returns (status, parsed JSON body or None)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://{base}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=RPC_TIMEOUT_S) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        raise CheckFailed(f"HTTP {method} http://{base}{path}: {e}") from e
    return status, (json.loads(raw) if raw else None)


def rpc_error(call, *args):
    """The RpcError `call(*args)` raises; a CheckFailed when it answers instead."""
    try:
        answer = call(*args, timeout=RPC_TIMEOUT_S)
    except grpc.RpcError as e:
        return e
    raise CheckFailed(f"expected an error, got an answer: {answer}")


def tamper_signature(token):
    """The token with one character in the middle of its signature part changed."""
    head, payload, signature = token.split(".")
    at = len(signature) // 2
    flipped = "B" if signature[at] == "A" else "A"
    return f"{head}.{payload}.{signature[:at]}{flipped}{signature[at + 1:]}"


def account_rpcs(auth, pb, http_access, validate):
    """The account API's RPCs (what a gateway in another process calls for /api/auth/*)."""
    email = f"py-rpc-{uuid.uuid4().hex[:12]}@example.com"
    r = auth.Register(pb.RegisterRequest(email=email.upper(), password=PASSWORD), timeout=RPC_TIMEOUT_S)
    check("Register: the account, email normalised, role user",
          r.account.user.email == email and list(r.account.user.roles) == ["user"]
          and "project:write" in r.account.permissions, str(r))
    e = rpc_error(auth.Register, pb.RegisterRequest(email=email, password=PASSWORD))
    check("Register(same email) -> ALREADY_EXISTS", e.code() == grpc.StatusCode.ALREADY_EXISTS,
          f"{e.code()}: {e.details()}")
    e = rpc_error(auth.Register, pb.RegisterRequest(email="not-an-email", password=PASSWORD))
    check("Register(bad email) -> INVALID_ARGUMENT naming email",
          e.code() == grpc.StatusCode.INVALID_ARGUMENT and "email" in (e.details() or ""),
          f"{e.code()}: {e.details()}")
    e = rpc_error(auth.Login, pb.LoginRequest(email=email, password="wrong " + PASSWORD))
    check("Login(wrong password) -> UNAUTHENTICATED", e.code() == grpc.StatusCode.UNAUTHENTICATED,
          f"{e.code()}: {e.details()}")
    t = auth.Login(pb.LoginRequest(email=email, password=PASSWORD, client_ip="192.0.2.7"),
                   timeout=RPC_TIMEOUT_S).tokens
    check("Login: tokens of a new session for the account",
          t.access_token and t.refresh_token and t.session_id and t.expires_in > 0
          and t.account.user.id == r.account.user.id, str(t))
    check("Login: the access token validates", validate(t.access_token).valid)
    n = auth.Refresh(pb.RefreshRequest(refresh_token=t.refresh_token), timeout=RPC_TIMEOUT_S).tokens
    check("Refresh: new tokens, same session",
          n.session_id == t.session_id and n.refresh_token != t.refresh_token, str(n))
    e = rpc_error(auth.Refresh, pb.RefreshRequest(refresh_token="not-a-refresh-token"))
    check("Refresh(unknown token) -> UNAUTHENTICATED", e.code() == grpc.StatusCode.UNAUTHENTICATED,
          f"{e.code()}: {e.details()}")
    bearer = [("authorization", f"Bearer {n.access_token}")]
    me = auth.GetMe(pb.GetMeRequest(), metadata=bearer, timeout=RPC_TIMEOUT_S)
    check("GetMe (the user's own token): the account", me.account.user.email == email, str(me))
    e = rpc_error(auth.GetMe, pb.GetMeRequest())
    check("GetMe without a token -> UNAUTHENTICATED", e.code() == grpc.StatusCode.UNAUTHENTICATED,
          f"{e.code()}: {e.details()}")
    e = rpc_error(lambda m, timeout: auth.SetUserRoles(m, metadata=bearer, timeout=timeout),
                  pb.SetUserRolesRequest(target_user_id=me.account.user.id, roles=["admin"]))
    check("SetUserRoles by a user -> PERMISSION_DENIED naming admin:users",
          e.code() == grpc.StatusCode.PERMISSION_DENIED and "admin:users" in (e.details() or ""),
          f"{e.code()}: {e.details()}")
    e = rpc_error(auth.VerifyEmail, pb.VerifyEmailRequest(token="not-a-mailed-token"))
    check("VerifyEmail(unknown token) -> INVALID_ARGUMENT naming token",
          e.code() == grpc.StatusCode.INVALID_ARGUMENT and "token" in (e.details() or ""),
          f"{e.code()}: {e.details()}")
    auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email), timeout=RPC_TIMEOUT_S)
    auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email="nobody@example.com"),
                              timeout=RPC_TIMEOUT_S)
    check("RequestPasswordReset: the same empty answer for any email", True)
    e = rpc_error(auth.ConfirmPasswordReset,
                  pb.ConfirmPasswordResetRequest(token="not-a-mailed-token", password=PASSWORD))
    check("ConfirmPasswordReset(unknown token) -> INVALID_ARGUMENT",
          e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{e.code()}: {e.details()}")
    keys = auth.GetSigningKeys(pb.GetSigningKeysRequest(), timeout=RPC_TIMEOUT_S)
    head = json.loads(base64.urlsafe_b64decode(http_access.split(".")[0] + "=="))
    check("GetSigningKeys: the key of the access token, EdDSA, 32 bytes, refresh_by ahead",
          any(k.kid == head["kid"] and k.alg == "EdDSA" and len(k.public_key) == 32 for k in keys.keys)
          and keys.refresh_by > time.time(), str(keys))
    auth.Logout(pb.LogoutRequest(), metadata=bearer, timeout=RPC_TIMEOUT_S)
    began = time.monotonic()
    while validate(n.access_token).valid:
        if time.monotonic() - began > REVOCATION_WAIT_S:
            raise CheckFailed(f"ValidateToken still valid {REVOCATION_WAIT_S} s after Logout")
        time.sleep(0.01)
    check("Logout (the user's own token): its session is revoked", True)


def run(grpc_addr, http_addr, pb, pb_grpc, health_pb, health_grpc):
    email = f"py-{uuid.uuid4().hex[:12]}@example.com"

    status, body = http(http_addr, "POST", "/api/auth/register", {"email": email, "password": PASSWORD})
    check("HTTP register -> 201", status == 201, f"status {status}: {body}")
    user_id = body["user"]["id"]
    status, tokens = http(http_addr, "POST", "/api/auth/login", {"email": email, "password": PASSWORD})
    check("HTTP login -> 200", status == 200, f"status {status}: {tokens}")
    check("login token_type is Bearer", tokens.get("token_type") == "Bearer", str(tokens))
    access, session_id = tokens["access_token"], tokens["session_id"]

    channel = grpc.insecure_channel(grpc_addr)
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
    except grpc.FutureTimeoutError:
        raise CheckFailed(f"gRPC channel to {grpc_addr} not ready within 10 s")
    auth = pb_grpc.AuthServiceStub(channel)

    def validate(token):
        return auth.ValidateToken(
            pb.ValidateTokenRequest(token=token, calling_service="python-client"),
            timeout=RPC_TIMEOUT_S,
        )

    v = validate(access)
    check("ValidateToken: valid", v.valid, f"problem {pb.TokenProblem.Name(v.problem)}")
    check("ValidateToken: user_id, email, session_id",
          (v.user_id, v.email, v.session_id) == (user_id, email, session_id), str(v))
    check("ValidateToken: roles == ['user'], not admin",
          list(v.roles) == ["user"] and not v.is_admin, str(v))
    check("ValidateToken: permissions include project:write", "project:write" in v.permissions, str(v))
    check("ValidateToken: expires_at in the future", v.expires_at > time.time(), str(v.expires_at))

    v = validate(tamper_signature(access))
    check("ValidateToken(tampered signature): valid false, BAD_SIGNATURE",
          not v.valid and v.problem == pb.TOKEN_PROBLEM_BAD_SIGNATURE,
          f"valid={v.valid} problem={pb.TokenProblem.Name(v.problem)}")

    u = auth.GetUserContext(pb.GetUserContextRequest(token=access), timeout=RPC_TIMEOUT_S)
    check("GetUserContext(token): the user and session",
          (u.user.id, u.user.email, u.session_id) == (user_id, email, session_id), str(u))
    u = auth.GetUserContext(pb.GetUserContextRequest(user_id=user_id), timeout=RPC_TIMEOUT_S)
    check("GetUserContext(user_id): roles ['user'], permissions include project:write",
          u.user.id == user_id and list(u.user.roles) == ["user"] and "project:write" in u.permissions,
          str(u))
    e = rpc_error(auth.GetUserContext, pb.GetUserContextRequest(user_id=str(uuid.uuid4())))
    check("GetUserContext(unknown user_id) -> NOT_FOUND", e.code() == grpc.StatusCode.NOT_FOUND,
          f"{e.code()}: {e.details()}")

    p = auth.CheckPermission(pb.CheckPermissionRequest(user_id=user_id, permission="project:write"),
                             timeout=RPC_TIMEOUT_S)
    check("CheckPermission(project:write): allowed", p.allowed, p.reason)
    p = auth.CheckPermission(pb.CheckPermissionRequest(user_id=user_id, permission="admin:users"),
                             timeout=RPC_TIMEOUT_S)
    check("CheckPermission(admin:users): denied, reason names it",
          not p.allowed and "admin:users" in p.reason, f"allowed={p.allowed} reason={p.reason!r}")
    e = rpc_error(auth.CheckPermission, pb.CheckPermissionRequest())
    check("CheckPermission(empty) -> INVALID_ARGUMENT naming user_id",
          e.code() == grpc.StatusCode.INVALID_ARGUMENT and "user_id" in (e.details() or ""),
          f"{e.code()}: {e.details()}")

    s = auth.ValidateSession(pb.ValidateSessionRequest(session_id=session_id, user_id=user_id),
                             timeout=RPC_TIMEOUT_S)
    check("ValidateSession: active", s.active and s.expires_at > time.time(), f"{s}")

    p = auth.GetUserPermissions(pb.GetUserPermissionsRequest(user_id=user_id), timeout=RPC_TIMEOUT_S)
    check("GetUserPermissions: one role 'user' with its permissions",
          [r.name for r in p.roles] == ["user"] and sorted(p.roles[0].permissions) == USER_PERMISSIONS,
          str(p))
    check("GetUserPermissions: permissions == " + str(USER_PERMISSIONS),
          list(p.permissions) == USER_PERMISSIONS, str(list(p.permissions)))

    h = auth.HealthCheck(pb.HealthCheckRequest(), timeout=RPC_TIMEOUT_S)
    check("HealthCheck: SERVING, storage up",
          h.status == "SERVING" and h.dependencies.get("storage") == "up", str(h))

    hc = health_grpc.HealthStub(channel).Check(health_pb.HealthCheckRequest(service=AUTH_SERVICE),
                                               timeout=RPC_TIMEOUT_S)
    check(f"grpc.health.v1 Check({AUTH_SERVICE}): SERVING",
          hc.status == health_pb.HealthCheckResponse.SERVING,
          health_pb.HealthCheckResponse.ServingStatus.Name(hc.status))

    account_rpcs(auth, pb, access, validate)

    nope = channel.unary_unary(
        f"/{AUTH_SERVICE}/Nope",
        request_serializer=pb.HealthCheckRequest.SerializeToString,
        response_deserializer=pb.HealthCheckResponse.FromString,
    )
    e = rpc_error(nope, pb.HealthCheckRequest())
    check("unknown method -> UNIMPLEMENTED", e.code() == grpc.StatusCode.UNIMPLEMENTED,
          f"{e.code()}: {e.details()}")

    status, body = http(http_addr, "POST", "/api/auth/logout", token=access)
    check("HTTP logout -> 204", status == 204, f"status {status}: {body}")
    # Revocation reaches the shard serving gRPC through the cross-shard bus, asynchronously.
    began = time.monotonic()
    while True:
        v = validate(access)
        if not v.valid:
            break
        if time.monotonic() - began > REVOCATION_WAIT_S:
            raise CheckFailed(f"ValidateToken still valid {REVOCATION_WAIT_S} s after logout")
        time.sleep(0.01)
    check(f"ValidateToken after logout: REVOKED (in {time.monotonic() - began:.3f} s)",
          v.problem == pb.TOKEN_PROBLEM_REVOKED, pb.TokenProblem.Name(v.problem))
    channel.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc", required=True, metavar="HOST:PORT", help="auth.grpc_listen")
    parser.add_argument("--http", required=True, metavar="HOST:PORT", help="gateway.listen")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sdsim-stubs-") as out_dir:
        modules = generate_stubs(pathlib.Path(out_dir))
        try:
            run(args.grpc, args.http, *modules)
        except CheckFailed as e:
            print(f"FAIL  {e}", file=sys.stderr)
            return 1
        except grpc.RpcError as e:
            print(f"FAIL  unexpected gRPC error {e.code()}: {e.details()}", file=sys.stderr)
            return 1
        except (OSError, KeyError, ValueError) as e:
            print(f"FAIL  {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    print("all AuthService checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
