"""The parts a backend is made of, one interface each, documented method by method:
``KeyStore`` (keys.py), ``ChangeLog`` (log.py), ``LockEngine`` (locks.py),
``ArtifactIndex`` (artifacts.py), ``SessionStore`` (sessions.py) and ``TxnStore``
(txn.py: transactions, pattern deletes, leases)."""
