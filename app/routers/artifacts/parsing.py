"""Reading an artifact call: its key, the upload's Content-Type, entity tags of the
conditional headers and a single byte range; and the headers a download answers with.
"""

from __future__ import annotations

import re
from email.utils import formatdate

from starlette.datastructures import Headers

from app.domain.artifacts import NO_ARTIFACT_CONDITION, ArtifactCondition, ArtifactMeta
from app.errors import InvalidRequest, RangeNotSatisfiable
from app.routers.common import write_precondition
from app.syntax import check_key

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CONTENT_TYPE = 255

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# type/subtype and parameters as sent, but no backslash and no control character.
_MEDIA_TYPE_RE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[\x20-\x5b\x5d-\x7e\t]*)?")
_RANGE_SPEC_RE = re.compile(r"(\d*)[ \t]*-[ \t]*(\d*)")


def artifact_key(key: str) -> str:
    return check_key(key, what="artifact key")


def content_type_of(headers: Headers) -> str:
    """The upload's Content-Type, kept as sent; application/octet-stream when absent."""
    value = headers.get("content-type", "").strip()
    if not value:
        return DEFAULT_CONTENT_TYPE
    if len(value) > MAX_CONTENT_TYPE or not _MEDIA_TYPE_RE.fullmatch(value):
        raise InvalidRequest(
            f"Content-Type {value[:80]!r} is not a media type like 'text/plain; "
            f"charset=utf-8' (at most {MAX_CONTENT_TYPE} printable characters, no backslash)."
        )
    return value


def etag_list(value: str, *, what: str) -> tuple[str, ...] | None:
    """The entity tags of an If-Match / If-None-Match / If-Range header; None for '*'.

    Unquoted tags are accepted and quoted; weak tags keep their ``W/`` prefix.
    """
    text = value.strip()
    if text == "*":
        return None
    tags = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        weak = part.startswith("W/")
        core = part[2:] if weak else part
        if not (len(core) >= 2 and core[0] == core[-1] == '"'):
            core = f'"{core}"'
        tags.append(("W/" if weak else "") + core)
    if not tags:
        raise InvalidRequest(f"{what} must be '*' or a list of quoted ETags.")
    return tuple(tags)


def artifact_condition(headers: Headers) -> ArtifactCondition:
    """If-Match ('"<sha256>"' list, or *) or If-None-Match (* only) of a write."""
    if_match, must_not_exist = write_precondition(headers)
    if must_not_exist:
        return ArtifactCondition(must_not_exist=True)
    if if_match is not None:
        tags = etag_list(if_match, what="If-Match")
        if tags is None:
            return ArtifactCondition(must_exist=True)
        return ArtifactCondition(etags=tags)
    return NO_ARTIFACT_CONDITION


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The byte span [start, end) a Range header asks of ``size`` bytes, or None to
    send everything (no range, a unit other than bytes, several ranges, or a suffix of
    an empty artifact). Raises RangeNotSatisfiable for a malformed or unsatisfiable one.
    """
    unit, sep, spec_text = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None  # RFC 9110 14.2: a range unit not understood is ignored
    specs = [s.strip() for s in spec_text.split(",") if s.strip()]
    if len(specs) > 1:
        return None  # several ranges: answered with the whole content (documented)
    unsatisfiable = RangeNotSatisfiable(
        f"The range {header.strip()[:80]!r} cannot be served from {size} bytes: use "
        "bytes=first-last, bytes=first- or bytes=-suffix.",
        headers={"Content-Range": f"bytes */{size}"},
    )
    match = _RANGE_SPEC_RE.fullmatch(specs[0]) if specs else None
    if match is None or (not match.group(1) and not match.group(2)):
        raise unsatisfiable
    first, last = (_bounded_int(g) if g else None for g in match.groups())
    if first is None:  # bytes=-n: the last n bytes
        assert last is not None
        if last == 0:
            raise unsatisfiable
        if size == 0:
            return None
        return max(0, size - last), size
    if (last is not None and last < first) or first >= size:
        raise unsatisfiable
    return first, size if last is None else min(last + 1, size)


def _bounded_int(digits: str) -> int:
    # Beyond any size, without converting an absurdly long number.
    return int(digits) if len(digits) <= 20 else 10**20


def http_date(ms: int) -> str:
    return formatdate(ms / 1000, usegmt=True)


def meta_headers(meta: ArtifactMeta) -> dict[str, str]:
    return {
        "ETag": meta.etag,
        "Last-Modified": http_date(meta.created_at),
        "Accept-Ranges": "bytes",
    }
