"""Benchmarks: each service's own (`intake`, `routing`, `sla`, `notify`), the whole platform's
(`pipeline`, `faults`, `broker`, `consumer_join`, `queries`) and the MongoDB driver comparison (`mongo_driver`). Each
module's docstring gives its command; the README lists them with their figures."""
