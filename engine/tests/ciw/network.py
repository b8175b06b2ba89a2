"""The cross-check model in Ciw (an independent discrete-event simulator, from PyPI).

Network with no closed form: Poisson arrivals (25/s) to station A, 2 servers with
Uniform(40 ms, 100 ms) service and room for 3 waiting (arrivals beyond it are rejected); 30% of
A's departures go on to station B, 1 server with Erlang(k=2, mean 60 ms) service; the rest
leave. (A finite queue fed by another station would block it in Ciw rather than drop, so the
finite queue is the one that takes external arrivals.) Prints per-station means over customers
arriving after the warm-up, as JSON.
"""
import json
import sys

import ciw

duration = float(sys.argv[1]) if len(sys.argv) > 1 else 5000.0
warmup = 200.0
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1

network = ciw.create_network(
    arrival_distributions=[ciw.dists.Exponential(rate=25.0), None],
    service_distributions=[
        ciw.dists.Uniform(lower=0.040, upper=0.100),
        ciw.dists.Erlang(rate=2 / 0.060, num_phases=2),
    ],
    routing=[[0.0, 0.3], [0.0, 0.0]],
    number_of_servers=[2, 1],
    queue_capacities=[3, float("inf")],
)
ciw.seed(seed)
Q = ciw.Simulation(network)
Q.simulate_until_max_time(duration)
records = [r for r in Q.get_all_records() if r.arrival_date > warmup and r.record_type == "service"]
rejected = [r for r in Q.get_all_records() if r.arrival_date > warmup and r.record_type == "rejection"]


def stats(node):
    rs = [r for r in records if r.node == node]
    n = len(rs)
    return {
        "served": n,
        "mean_wait_ms": 1e3 * sum(r.waiting_time for r in rs) / n,
        "mean_response_ms": 1e3 * sum(r.waiting_time + r.service_time for r in rs) / n,
    }


a = stats(1)
rejected_a = sum(1 for r in rejected if r.node == 1)
a["blocked_fraction"] = rejected_a / (a["served"] + rejected_a)
print(json.dumps({"a": a, "b": stats(2)}))
