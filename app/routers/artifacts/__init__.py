"""Artifacts (API.md section 6): blobs uploaded and downloaded as streams, with sha256
ETags, conditional requests, single byte ranges, TTL, listing and change events.

``parsing`` reads a call's key and headers, ``transfer`` streams the bytes in and out
(the blob store holds them, the state backend their metadata), ``routes`` is the API.
"""

from __future__ import annotations

from app.routers.artifacts.routes import router

__all__ = ["router"]
