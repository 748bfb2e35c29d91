"""Which events a watcher wants (``EventFilter``), and the frame of an event as that
watcher sees it: compound events keep only their matching changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.backends.base import ChangeEvent
from app.errors import InvalidRequest
from app.event_changes import COMPOUND_TYPES, filtered_data
from app.events.frames import EVENT, Frame, sse_frame
from app.syntax import MATCH_ALL, Pattern, check_id

#: The families of event types; ``types=`` accepts these or full types like ``kv.put``.
EVENT_PREFIXES = ("kv", "variable", "lock", "session", "artifact", "txn", "lease")


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a watcher wants: a key pattern, type prefixes, one session.

    Filters are values: watchers with equal filters share one match per event.
    """

    pattern: Pattern = MATCH_ALL
    types: tuple[str, ...] = ()
    session: str | None = None

    @classmethod
    def parse(cls, pattern: str | None, types: str | None, session: str | None) -> EventFilter:
        wanted: tuple[str, ...] = ()
        if types:
            wanted = tuple(sorted({t.strip() for t in types.split(",") if t.strip()}))
            unknown = [t for t in wanted if t.split(".", 1)[0] not in EVENT_PREFIXES]
            if unknown:
                raise InvalidRequest(
                    f"Unknown event types {unknown}: use {', '.join(EVENT_PREFIXES)} "
                    "or full types such as kv.put.",
                    errors=[{"location": ["query", "types"], "message": "unknown event type"}],
                )
        return cls(
            Pattern.compile(pattern) if pattern is not None else MATCH_ALL,
            wanted,
            check_id(session, what="session id") if session else None,
        )

    def accepts(self, type_: str, key: str, session: str | None) -> bool:
        if self.session is not None and session != self.session:
            return False
        if self.types and not any(type_ == t or type_.startswith(t + ".") for t in self.types):
            return False
        return self.pattern is MATCH_ALL or self.pattern.matches(key)

    def matches(self, event: ChangeEvent) -> bool:
        return self.accepts(event.type, event.key, event.session)

    @property
    def wants_keys(self) -> bool:
        """Whether live keys (``kv.put``) pass the filter's types and session: what a
        snapshot sends."""
        return self.session is None and (
            not self.types or any(t == "kv" or t == "kv.put" for t in self.types)
        )

    def frame(self, event: ChangeEvent, shared: Frame | None = None) -> Frame | None:
        """The event's frame as this watcher sees it, or None when it does not match.

        A compound event (txn, lease end) keeps only the changes that match; ``shared``
        is the event's unfiltered frame when one was built already.
        """
        if event.type not in COMPOUND_TYPES:
            if not self.matches(event):
                return None
            return shared or Frame.of_event(event)
        data = filtered_data(event, self.pattern, self.types, self.session)
        if data is None:
            return None
        if data is event.data:
            return shared or Frame.of_event(event)
        return Frame(EVENT, event.revision, data, sse_frame(event.revision, event.type, data))
