"""Resilience policy cores (sans-I/O): retries, budgets, breakers, outliers, balancing, deadlines.

Every module here is pure: no asyncio, no sockets. Time comes in as `now` (a float from
`time.monotonic()`, or unix seconds where a module says so) and randomness from an injectable
`random.Random`, so each core is unit-tested exactly and costs a few microseconds per request.
The one exception is `health_probe`, the asyncio prober that feeds `health`.

`adapters` converts the runtime tables' specs into the cores' configs and offers
`EndpointPicker`, one `pick(now, exclude, hash_key)` for every lb policy.

How the data plane wires them, per request (one cluster runtime holds one of each per cluster):

1. `deadline.effective_timeout(route.timeout_s, deadline.remaining_from_headers(...))`
   gives the budget for the whole exchange; an already expired caller deadline is a 504.
2. `breaker.CircuitBreaker.admit_request()`; a refusal is a 503 with its `reason`
   (`circuit_open` / `pending_overflow`) in the response header and the access log.
3. `outlier.OutlierDetector.hosts_for_balancing(keys, now, health.unhealthy())` says whom to
   balance over (all of them in panic mode); the keys left out, plus the endpoints this
   request already tried, go to `EndpointPicker.pick(now, exclude=..., hash_key=...)` (the
   key from `hash_policy.hash_key_for`, whose generated cookie goes on the response).
4. After each try: `outlier.record(key, status_or_failure, now)`, the balancer's
   `finish`/`observe` (least request, peak EWMA).
5. Retry when `backoff.RetryConditions.should_retry(...)` says so, the attempt count allows,
   `budget.RetryBudget.try_withdraw(now)` agrees (rate form, 20% + 3/s) and
   `breaker.admit_retry()` admits; wait `backoff.Backoff.delay(attempt, retry_after)`.
"""
