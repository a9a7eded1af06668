"""`signoff chaos`: the fault-injection suite. The roles run as processes under `signoff dev up`'s supervisor
(which restarts them), on the embedded broker and PostgreSQL; each scenario injects faults while a workload runs
and counts what was lost, doubled or left stuck (docs/reliability.md)."""
