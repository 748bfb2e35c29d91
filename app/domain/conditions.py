"""A write's precondition (If-Match / If-None-Match: *) on any kind of record, and the
one rule that decides it.

A key is matched on its revision, a variable on its version, an artifact on its ETag
(a quoted sha256, strong comparison). Each kind is a ``Subject``: how to name it in a
message and what its tag is. Every backend and every resource checks through
``Condition.check``; the Redis scripts get the same condition as ``script_args``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.errors import NotFound, PreconditionFailed


@dataclass(frozen=True, slots=True)
class Subject:
    """A kind of record a condition is checked against.

    ``name`` starts the messages ("The key"), ``unit`` names the tag ("revision") and
    ``tag`` reads it off a record. With ``absent_is_not_found`` a missing record under
    If-Match is a 404 (a variable is addressed by its URL) instead of a 412.
    """

    name: str
    unit: str
    tag: Callable[[Any], int | str]
    absent_is_not_found: bool = False


KEY = Subject("The key", "revision", lambda entry: entry.revision)
ARTIFACT = Subject("The artifact", "ETag", lambda meta: meta.etag)


def variable(ident: str) -> Subject:
    """The subject of a variable write addressed by ``ident`` (a name or an id)."""
    return Subject(f"Variable {ident!r}", "version", lambda var: var.version,
                   absent_is_not_found=True)


@dataclass(frozen=True, slots=True)
class Condition:
    """If-Match on a number (``match_revision``: a key's revision, a variable's version)
    or on entity tags (``etags``: an artifact's), If-Match: * (``must_exist``), or
    If-None-Match: * (``must_not_exist``). The empty condition always holds."""

    match_revision: int | None = None
    etags: tuple[str, ...] | None = None
    must_exist: bool = False
    must_not_exist: bool = False

    @property
    def any(self) -> bool:
        return (
            self.match_revision is not None or self.etags is not None
            or self.must_exist or self.must_not_exist
        )

    def check(self, current: Any | None, subject: Subject) -> None:
        """Raise PreconditionFailed (412, ``current`` in the body; code
        ``already_exists`` or ``revision_mismatch``) unless the condition holds for
        ``current`` (None: absent)."""
        if self.must_not_exist and current is not None:
            raise PreconditionFailed(
                f"{subject.name} already exists (If-None-Match: *).",
                code="already_exists", current=current,
            )
        if not (self.must_exist or self.match_revision is not None or self.etags is not None):
            return
        if current is None:
            if subject.absent_is_not_found:
                raise NotFound(f"{subject.name} does not exist.")
            raise PreconditionFailed(f"{subject.name} does not exist (If-Match).", current=None)
        have = subject.tag(current)
        if self.match_revision is not None and have != self.match_revision:
            raise PreconditionFailed(
                f"{subject.name} is at {subject.unit} {have}, not {self.match_revision}.",
                current=current,
            )
        if self.etags is not None and have not in self.etags:
            raise PreconditionFailed(
                f"{subject.name} is at {subject.unit} {have}, which does not match If-Match.",
                current=current,
            )

    def script_args(self) -> list[str]:
        """The two arguments (mode, operand) the Redis scripts' condition check reads."""
        if self.must_not_exist:
            return ["absent", ""]
        if self.match_revision is not None:
            return ["match", str(self.match_revision)]
        if self.etags is not None:
            # Only strong, quoted ETags can match (If-Match uses the strong comparison).
            shas = [t[1:-1] for t in self.etags if len(t) >= 2 and t[0] == t[-1] == '"']
            return ["match", ",".join(s for s in shas if "," not in s)]
        if self.must_exist:
            return ["exists", ""]
        return ["", ""]


NO_CONDITION = Condition()
#: The names key and artifact writes were typed with before there was one Condition.
Precondition = Condition
ArtifactCondition = Condition
