"""Per-tenant quotas: the pure decisions (:mod:`.policy`), the RateLimit header fields
(:mod:`.headers`) and the request-rate limiter (:mod:`.rate`). The SQL is in
:mod:`conveyor.store.quotas`, the HTTP side in :mod:`conveyor.api.quotas`."""
