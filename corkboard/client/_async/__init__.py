"""The async client, written by hand; ``corkboard/client/_sync`` is generated from it by
``scripts/unasync.py`` (edit here, then run the script)."""
