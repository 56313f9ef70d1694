"""Chaos soak: a real fleet under client load while faults hit it and versions keep coming.

    python -m bench.chaos --minutes 10          # `make chaos`; also `python bench/chaos`
    python -m bench.chaos --minutes 1 --json-out summary.json

It owns everything it runs (stopped by PID, also on failure): a `redis-server` with AOF in a
temp dir (so "restart with data" keeps the lineage), two admin services, three proxy
replicas with last-known-good files and a short reconcile interval, and two mock upstreams
(`a` primary, `b` the fallback). While client load runs on every replica and a publisher
keeps publishing through the admins (If-Match + Idempotency-Key, re-reading head on 409),
a schedule of faults cycles:

    redis_kill_with_data    SIGKILL Redis, restart it on its AOF
    redis_restart_empty     SIGKILL Redis, restart it with no data: a new epoch
    redis_pause             SIGSTOP past every client timeout, then SIGCONT
    pubsub_kill             CLIENT KILL TYPE pubsub, then publish at once
    replica_restart         Redis down, SIGTERM a replica, restart it from its snapshot file
                            (must serve, marked stale), then Redis back
    invalid_document        a schema-invalid record written straight into Redis as head
    corrupt_record          a record whose body fails its checksum / that lacks fields
    two_admins              two admins publish on the same base: one 201, one 409
    clients_kill            CLIENT KILL TYPE normal: every plain connection dropped at once
    upstream_fail           the primary upstream answers 500: the fallback must answer
    rollout_aborted         a rollout to the canary (replica-1, tier=canary) of a valid but
                            broken version (provider on a dead port): the guard must abort it
    rollout_promoted        a rollout of a good version: promoted after its bake
    net_latency             200 ms each way between every replica and Redis (a fault proxy)
    net_loss                10 % TCP segment loss there (retransmission stalls, see
                            configbus.tooling.faultproxy): a publish must still arrive
    net_cut                 every replica's Redis connection reset at once
    netns_link_down         replica-3 runs in a network namespace (as root; skipped with the
                            reason otherwise): its veth link to Redis goes down, a publish,
                            the link comes back (its clients' link stays up)

Invariants are checked all along (replicas' /status polled ~10x/s, every answer classified,
history read every second; no replica outside a rollout's stage may run its version before
it is promoted) and a JSON summary is printed; the exit code is 0 when every
check holds. Causes of failed requests are read from the answer: config (no config, 401,
403, 404, 400), redis/internal (500, client timeout, connection errors to a live replica),
upstream (502, 504, circuit open), rate limit (429). The canary's upstream failures while it
runs a broken rollout are the guard's evidence, counted apart.

The package, one concern per module: `processes` (the fleet it runs), `documents` (what it
publishes), `publisher` and `load` (the traffic), `invariants` (what it watches),
`inject`, `faults` and `network` (what it breaks), `report` (the summary), `soak` (the run).
"""
