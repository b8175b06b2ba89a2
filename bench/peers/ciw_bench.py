"""The simulation benchmark's model in Ciw: prints the wall time of one run as JSON.

users (Poisson 300/s) -> gateway (64 servers, Exp mean 2 ms) -> app (16 servers, Erlang k=3
mean 30 ms) -> 70% db (20 servers, Exp mean 15 ms), 30% search (16 servers, Uniform 20-60 ms).
Usage: ciw_bench.py DURATION_S SEED
"""
import json
import sys
import time

import ciw

duration = float(sys.argv[1])
seed = int(sys.argv[2])
network = ciw.create_network(
    arrival_distributions=[ciw.dists.Exponential(rate=300.0), None, None, None],
    service_distributions=[
        ciw.dists.Exponential(rate=1 / 0.002),
        ciw.dists.Erlang(rate=3 / 0.030, num_phases=3),
        ciw.dists.Exponential(rate=1 / 0.015),
        ciw.dists.Uniform(lower=0.020, upper=0.060),
    ],
    routing=[
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 0.7, 0.3],
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ],
    number_of_servers=[64, 16, 20, 16],
)
ciw.seed(seed)
Q = ciw.Simulation(network)
start = time.perf_counter()
Q.simulate_until_max_time(duration)
wall = time.perf_counter() - start
served = sum(1 for r in Q.get_all_records() if r.record_type == "service")
print(json.dumps({"wall_s": wall, "services": served}))
