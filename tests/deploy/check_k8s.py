#!/usr/bin/env python3
"""Checks deploy/k8s/ beyond its schema (kubernetes-validate --strict checks that): every
Deployment's configuration is one the sdsim binary accepts, with the environment the pod gives
it; probes, ports, the stop sequence and the CPU manager's needs fit together; every Deployment
has a Service and a PodDisruptionBudget that select its pods.

Usage: check_k8s.py SDSIM_BINARY DEPLOY_K8S_DIR DEFAULT_SHUTDOWN_S
Prints one line per check; exits non-zero naming the first that fails.
"""

import glob
import os
import subprocess
import sys
import tempfile

import yaml


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)
    print(f"ok: {message}")


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def main():
    binary, folder, shutdown_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    docs = []
    for path in sorted(glob.glob(os.path.join(folder, "*.yaml"))):
        with open(path) as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    config = {c["metadata"]["name"]: c["data"] for c in by_kind.get("ConfigMap", [])}
    secrets = {s["metadata"]["name"]: s["stringData"] for s in by_kind.get("Secret", [])}
    deployments = by_kind.get("Deployment", [])
    check(len(deployments) >= 3, f"{len(deployments)} Deployments")
    for dep in deployments:
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        check(selects(dep["spec"]["selector"]["matchLabels"], labels), f"{name}: selects its pods")
        (container,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}

        # The configuration, with the environment the pod sets, is one sdsim accepts.
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v}
        args = container["args"]
        config_path = args[args.index("--config") + 1]
        (volume,) = [v for v, path in mounts.items() if config_path.startswith(path + "/")]
        text = config[volumes[volume]][os.path.basename(config_path)]
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        for e in container.get("env", []):
            source = e.get("valueFrom", {})
            if "value" in e:
                env[e["name"]] = e["value"]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[e["name"]] = secrets[ref["name"]][ref["key"]]
            elif source.get("fieldRef", {}).get("fieldPath") == "status.podIP":
                env[e["name"]] = "10.1.2.3"
            elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[e["name"]] = f"{name}-5d8f9c7b6-x2x9q"
            else:
                fail(f"{name}: env {e['name']} has a source this check does not know")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, os.path.basename(config_path))
            with open(path, "w") as f:
                f.write(text)
            out = subprocess.run([binary, "--config", path, "config"], env=env, cwd=tmp,
                                 capture_output=True, text=True)
            check(out.returncode == 0, f"{name}: sdsim accepts {config_path} with the pod's environment {out.stderr.strip()}")
            printed = out.stdout
        listen = "listen = \"0.0.0.0:%d\"" % ports["http"]
        check(listen in printed, f"{name}: the gateway listener is the http port {ports['http']}")
        grpc = "grpc_listen = \"0.0.0.0:%d\"" % ports["grpc"]
        check(grpc in printed, f"{name}: a role's gRPC listener is the grpc port {ports['grpc']}")

        # Probes on the listener that serves them.
        ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
        check(ready["path"] == "/health/ready" and ready["port"] in ports, f"{name}: readiness on /health/ready")
        check(live["path"] == "/health" and live["port"] in ports, f"{name}: liveness on /health")

        # The stop sequence: the pause, then the whole drain, within the grace period.
        pause = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
        grace = pod["spec"]["terminationGracePeriodSeconds"]
        check(grace > pause + shutdown_s, f"{name}: grace {grace} s > preStop {pause} s + drain {shutdown_s} s")

        # Guaranteed QoS with whole CPUs: what the static CPU manager policy pins.
        res = container["resources"]
        check(res["requests"] == res["limits"], f"{name}: requests equal limits (Guaranteed)")
        check(str(res["limits"]["cpu"]).isdigit(), f"{name}: a whole number of CPUs")

        services = [s for s in by_kind.get("Service", []) if selects(s["spec"]["selector"], labels)]
        check(len(services) == 1, f"{name}: one Service selects its pods")
        for p in services[0]["spec"]["ports"]:
            check(p["targetPort"] in ports, f"{name}: Service port {p['name']} targets a container port")
        budgets = [b for b in by_kind.get("PodDisruptionBudget", []) if selects(b["spec"]["selector"]["matchLabels"], labels)]
        check(len(budgets) == 1, f"{name}: one PodDisruptionBudget")
    print("all deployment checks passed")


if __name__ == "__main__":
    main()
