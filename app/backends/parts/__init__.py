"""The parts a backend is made of, one interface each, documented method by method:
``KeyStore`` (keys.py), ``ChangeLog`` (log.py), ``LockEngine`` (locks.py),
``ArtifactIndex`` (artifacts.py), ``SessionStore`` (sessions.py), ``LeaseStore`` and
``TxnStore`` (txn.py: leases; transactions and pattern deletes)."""
