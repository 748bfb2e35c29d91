"""Corkboard's Python client and command line: ``corkboard.client`` talks to a Corkboard
service over HTTP (sync and async), ``corkboard.cli`` is the ``corkboard`` command's
client half. Neither imports the service (``app``), so they could ship on their own.
"""
