"""The state layer's values and rules, with no I/O: what every backend part stores and
returns, and the checks they all apply the same way.

- ``keys``: a key's entry, a put's result, a listing page, a server-side value update.
- ``conditions``: ``Condition`` (If-Match / If-None-Match) and its one evaluator.
- ``fence``: ``Fence`` (Fence-Lock / Fence-Token) and the error of a stale one.
- ``events``: a change event, a batch of them, and ``encode_event``: the one place an
  event's JSON is built.
- ``bounds``: the per-namespace bounds and the quota error.
- ``locks``, ``sessions``, ``artifacts``, ``leases``: each resource's values and rules.
- ``numbers``: the exact-increment rule shared by PATCH-increment and transactions.
"""
