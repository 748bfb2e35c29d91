"""Server-side value updates: JSON Merge Patch (RFC 7396) and JSON Patch (RFC 6902).

Pure functions on decoded JSON; they raise CorkboardErrors so a router can hand them to a
backend's atomic update unchanged.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.errors import InvalidRequest, PayloadTooLarge, PreconditionFailed, Unprocessable


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge recursively, null removes a member, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike ==, true is not 1 and 1 is 1.0 only as numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(json_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _pointer(path: Any, op_index: int) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise InvalidRequest(f"Operation {op_index}: 'path' must be a JSON Pointer like '/a/0'.")
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool, where: str) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise Unprocessable(f"{where}: {token!r} is not an array index.")
    i = int(token)
    if i > len(container) or (i == len(container) and not allow_end):
        raise Unprocessable(f"{where}: index {i} is out of range (length {len(container)}).")
    return i


def _parent(doc: Any, tokens: list[str], where: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False, where=where)]
        else:
            raise Unprocessable(f"{where}: the path does not exist.")
    return node


def _get(doc: Any, tokens: list[str], where: str) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens, where)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise Unprocessable(f"{where}: the path does not exist.")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, allow_end=False, where=where)]
    raise Unprocessable(f"{where}: the path does not exist.")


def _add(doc: Any, tokens: list[str], value: Any, where: str) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens, where)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True, where=where), value)
    else:
        raise Unprocessable(f"{where}: the parent of the path is not a container.")
    return doc


def _remove(doc: Any, tokens: list[str], where: str) -> tuple[Any, Any]:
    if not tokens:
        raise Unprocessable(f"{where}: cannot remove the whole document.")
    parent = _parent(doc, tokens, where)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise Unprocessable(f"{where}: the path does not exist.")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, allow_end=False, where=where))
    raise Unprocessable(f"{where}: the path does not exist.")


def _encode(value: Any, where: str) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:  # nested deeper than 255 levels
        raise Unprocessable(f"{where}: the result cannot be stored: {exc}.") from exc


def _clone(value: Any, where: str) -> Any:
    """A deep copy through orjson, many times faster than copy.deepcopy."""
    return orjson.loads(_encode(value, where))


def _member_size(tokens: list[str]) -> int:
    """What a member adds around its value: its name, quotes, colon and comma."""
    return len(tokens[-1]) + 4 if tokens else 0


def json_patch(
    document: Any, operations: Any, *, max_ops: int | None = None, max_bytes: int | None = None
) -> Any:
    """RFC 6902, all or nothing: returns the patched copy; a failed ``test`` is 412.

    Bounded work: more than ``max_ops`` operations is 400, and the document's size is
    tracked after every operation, so a patch whose ``copy`` operations double the document
    is refused (413) the moment it passes ``max_bytes``, not after building it. The size
    tracked is the encoded document's, adjusted by what each operation adds or removes
    (values exactly, member names and separators approximately); the caller checks the
    exact size of the result. Values are copied through orjson, not copy.deepcopy.
    """
    if not isinstance(operations, list):
        raise InvalidRequest("A JSON Patch body must be an array of operations.")
    if max_ops is not None and len(operations) > max_ops:
        raise InvalidRequest(
            f"The JSON Patch has {len(operations)} operations; at most {max_ops} are allowed."
        )
    doc = _clone(document, "The document")
    bounded = max_bytes is not None
    limit = max_bytes or 0
    # Copies are the only operations that multiply a document; a bomb of tiny containers
    # ([] is 2 bytes) would build ~500,000 objects before the size limit stopped it, so
    # the arrays and objects copied are bounded too (one per 64 bytes of the limit).
    copied, copy_budget = 0, limit // 64
    size = len(_encode(doc, "The document")) if bounded else 0
    for i, op in enumerate(operations):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise InvalidRequest(f"Operation {i} must be an object with an 'op' member.")
        kind = op["op"]
        where = f"Operation {i} ({kind} {op.get('path')!r})"
        tokens = _pointer(op.get("path"), i)
        if kind in ("add", "replace", "test") and "value" not in op:
            raise InvalidRequest(f"{where}: 'value' is required.")
        if kind in ("add", "replace", "copy"):
            # The new value, encoded once: its size is checked before anything is built.
            new = op["value"] if kind != "copy" else _get(doc, _pointer(op.get("from"), i), where)
            encoded = _encode(new, where)
            if bounded:
                size += len(encoded) + (_member_size(tokens) if kind != "replace" else 0)
                if kind == "copy":
                    copied += encoded.count(b"[") + encoded.count(b"{")
                    if copied > copy_budget:
                        raise PayloadTooLarge(
                            f"{where}: the patch copies more than {copy_budget} arrays and "
                            f"objects (one per 64 bytes of the {limit}-byte value limit)."
                        )
                if size > limit:
                    raise PayloadTooLarge(
                        f"{where}: the patched value would exceed the limit of {limit} "
                        "bytes."
                    )
        if kind == "add":
            doc = _add(doc, tokens, orjson.loads(encoded), where)
        elif kind == "remove":
            doc, removed = _remove(doc, tokens, where)
            if bounded:
                size -= len(_encode(removed, where)) + _member_size(tokens)
        elif kind == "replace":
            old = _get(doc, tokens, where)
            if bounded:
                size -= len(_encode(old, where))
            if tokens:
                doc, _ = _remove(doc, tokens, where)
            doc = _add(doc, tokens, orjson.loads(encoded), where)
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"), i)
            if kind == "move" and tokens[: len(source)] == source and tokens != source:
                raise Unprocessable(f"{where}: cannot move a value into one of its children.")
            if kind == "move":
                doc, value = _remove(doc, source, where)
            else:
                value = orjson.loads(encoded)
            doc = _add(doc, tokens, value, where)
        elif kind == "test":
            if not json_equal(_get(doc, tokens, where), op["value"]):
                raise PreconditionFailed(f"{where}: the test failed; nothing was changed.")
        else:
            raise InvalidRequest(f"Operation {i}: unknown op {kind!r}.")
    return doc
