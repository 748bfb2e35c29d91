"""The MCP server at ``/mcp`` (API.md section 12): the official SDK's low-level server
over streamable HTTP, serving the tools of app.mcp.tools and the resources
``corkboard://{ns}/kv/{key}`` with update notifications fed by the watch hub.

Access is the /v1 access layer's (app.access): it authenticates the bearer token of
every /mcp request (401 without a valid one when tokens are configured) and leaves the
grant in the request scope; every tool's ``ns`` and every resource's namespace is then
checked against that grant with ``authorize``, ``read`` for reads and ``write`` for
writes, before anything is touched. Both protocol eras are served: 2026-07-28
``subscriptions/listen`` and the 2025 ``resources/subscribe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import mcp_types as types
import orjson
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from app import __version__
from app.access import OPEN, Grant, authorize
from app.errors import (
    CorkboardError,
    InvalidRequest,
    Unprocessable,
    error_response,
)
from app.events import EventFilter, Subscription
from app.mcp.tools import TOOLS, Parts
from app.routers.kv import key_of, read_key
from app.syntax import Pattern, check_namespace

logger = logging.getLogger("corkboard.mcp")

URI_PREFIX = "corkboard://"
URI_TEMPLATE = "corkboard://{ns}/kv/{+key}"
INSTRUCTIONS = (
    "Corkboard: shared state for agents. Keys hold JSON values with revisions (kv_*), "
    "locks give fencing tokens (lock_*), sessions hold typed variables (session_*), "
    "artifacts hold files (artifact_*), txn compares and writes keys atomically, leases "
    "(lease_*) keep keys alive only while kept alive, and wait_for_change long-polls the "
    "change feed. "
    "Every tool takes `ns`, the namespace (default 'default')."
)
#: JSON-RPC code of a resource that does not exist (MCP specification).
RESOURCE_NOT_FOUND = -32002


def problem_of(exc: CorkboardError) -> dict[str, Any]:
    """The problem document /v1 would answer with (extra members made JSON)."""
    problem: dict[str, Any] = orjson.loads(error_response(exc).body)
    return problem


def tool_error(exc: CorkboardError) -> types.CallToolResult:
    problem = problem_of(exc)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{exc.code}: {exc.detail}")],
        structured_content=problem,
        is_error=True,
    )


def invalid_arguments(exc: ValidationError) -> Unprocessable:
    errors = [
        {"location": [str(p) for p in e["loc"]], "message": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False)
    ]
    summary = "; ".join(f"{'.'.join(e['location']) or '(arguments)'}: {e['message']}"
                        for e in errors)
    return Unprocessable(f"The arguments are not valid: {summary}", errors=errors)


def parse_uri(uri: str) -> tuple[str, str]:
    """(namespace, key) of ``corkboard://{ns}/kv/{key}``; 400 for anything else."""
    ns, sep, key = uri.removeprefix(URI_PREFIX).partition("/kv/")
    if not uri.startswith(URI_PREFIX) or not sep:
        raise InvalidRequest(f"{uri[:120]!r} is not a resource of this server: "
                             f"use {URI_TEMPLATE}.")
    return check_namespace(ns), key_of(key)


def resource_error(exc: CorkboardError) -> MCPError:
    code = RESOURCE_NOT_FOUND if exc.status == 404 else types.INVALID_PARAMS
    return MCPError(code=code, message=f"{exc.code}: {exc.detail}", data=problem_of(exc))


class McpService:
    """The server, its session manager (run by the app's lifespan) and the resource
    subscriptions of 2025-era sessions."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.tools = {t.name: t for t in TOOLS}
        self.server: Server[Any] = Server(
            "corkboard",
            version=__version__,
            instructions=INSTRUCTIONS,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
            on_subscribe_resource=self.subscribe,
            on_unsubscribe_resource=self.unsubscribe,
            on_subscriptions_listen=self.listen,
        )
        self.manager = StreamableHTTPSessionManager(app=self.server)
        self._subscribed: dict[tuple[int, str], asyncio.Task[None]] = {}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[McpService]:
        async with self.manager.run():
            try:
                yield self
            finally:
                for task in list(self._subscribed.values()):
                    task.cancel()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.manager.handle_request(scope, receive, send)

    # -- access --------------------------------------------------------------------

    @staticmethod
    def grant_of(ctx: ServerRequestContext[Any, Any]) -> Grant | None:
        """The grant the access layer left in the scope of the call's HTTP request."""
        request = ctx.request
        grant = request.scope.get("corkboard.grant") if request is not None else None
        return grant if isinstance(grant, Grant) else None

    def check(self, ctx: ServerRequestContext[Any, Any], ns: str, permission: str) -> None:
        """Forbidden unless the caller's grant allows ``permission`` on ``ns``."""
        authorize(self.grant_of(ctx), ns, permission)

    def readable_namespaces(self, ctx: ServerRequestContext[Any, Any]) -> list[str]:
        """The namespaces whose keys resources/list shows: those the token names
        exactly (not by a '*' pattern) and may read; 'default' without tokens."""
        grant = self.grant_of(ctx)
        if grant is OPEN:
            return ["default"]
        if grant is None:
            return []
        names = [p.pattern.replace("\\", "") for p in grant.namespaces if ".*" not in p.pattern]
        return sorted(n for n in set(names) if grant.allows(n, "read"))

    # -- tools ---------------------------------------------------------------------

    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[
            types.Tool(
                name=t.name,
                description=t.description,
                input_schema=t.model.model_json_schema(),
                output_schema={"type": "object"},
                annotations=types.ToolAnnotations(read_only_hint=t.permission == "read"),
            )
            for t in TOOLS
        ])

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        spec = self.tools.get(params.name)
        try:
            if spec is None:
                raise InvalidRequest(f"There is no tool {params.name!r}.")
            try:
                args = spec.model.model_validate(params.arguments or {})
            except ValidationError as exc:
                raise invalid_arguments(exc) from exc
            ns = check_namespace(vars(args)["ns"])
            self.check(ctx, ns, spec.permission)
            result = await spec.run(self.parts, args)
        except CorkboardError as exc:
            return tool_error(exc)
        except Exception:
            logger.exception("MCP tool %s failed", params.name)
            return tool_error(CorkboardError("An unexpected error occurred."))
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=orjson.dumps(result).decode())],
            structured_content=result,
        )

    # -- resources -----------------------------------------------------------------

    async def list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        resources = []
        everything = Pattern.compile("*")
        limit = self.parts.settings.max_list_limit
        try:
            for ns in self.readable_namespaces(ctx):
                page = await self.parts.backend.kv_list(ns, everything, limit=limit, after=None)
                resources += [
                    types.Resource(
                        name=f"{ns}/{entry.key}",
                        uri=f"{URI_PREFIX}{ns}/kv/{entry.key}",
                        mime_type="application/json",
                        description=f"Key {entry.key!r} of namespace {ns!r}",
                    )
                    for entry in page.items
                ]
        except CorkboardError as exc:
            raise resource_error(exc) from exc
        return types.ListResourcesResult(resources=resources)

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[
            types.ResourceTemplate(
                name="key",
                uri_template=URI_TEMPLATE,
                mime_type="application/json",
                description="A key's entry (value, revision, version, expiry) as JSON",
            )
        ])

    async def read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        try:
            ns, key = parse_uri(uri)
            self.check(ctx, ns, "read")
            entry = await read_key(self.parts.backend, ns, key, None)
        except CorkboardError as exc:
            raise resource_error(exc) from exc
        return types.ReadResourceResult(contents=[
            types.TextResourceContents(
                uri=uri, mime_type="application/json", text=entry.to_json().decode()
            )
        ])

    async def _watch(self, ctx: ServerRequestContext[Any, Any], uri: str) -> Subscription:
        """A hub subscription to changes of the key a URI names, access checked."""
        try:
            ns, key = parse_uri(uri)
            self.check(ctx, ns, "read")
            return await self.parts.hub.subscribe(ns, EventFilter.parse(key, "kv", None), None)
        except CorkboardError as exc:
            raise resource_error(exc) from exc

    async def listen(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        """subscriptions/listen (2026-07-28): the SDK's handler serves the stream; the
        watch hub's events for each subscribed key are published into it."""
        uris = list(params.notifications.resource_subscriptions or ())
        bus = InMemorySubscriptionBus()
        handler = ListenHandler(bus, max_subscriptions=1)
        subs: list[tuple[str, Subscription]] = []
        pumps: list[asyncio.Task[None]] = []
        try:
            for uri in uris:
                subs.append((uri, await self._watch(ctx, uri)))
            for uri, sub in subs:
                publish = functools.partial(bus.publish, ResourceUpdated(uri=uri))
                pumps.append(asyncio.create_task(pump(sub, publish, handler.close)))
            return await handler(ctx, params)
        finally:
            for task in pumps:
                task.cancel()
            for _, sub in subs:
                sub.close()

    async def subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        """resources/subscribe (2025 sessions): notifications/resources/updated on the
        session's stream for every change of the key, until unsubscribed."""
        uri = str(params.uri)
        slot = (id(ctx.session), uri)
        if slot not in self._subscribed:
            sub = await self._watch(ctx, uri)
            session = ctx.session

            async def notify() -> None:
                await session.send_resource_updated(uri)

            task = asyncio.create_task(pump(sub, notify, lambda: None))
            self._subscribed[slot] = task
            task.add_done_callback(lambda _t: self._subscribed.pop(slot, None))
            # Sending to a closed session does not fail (notifications are best-effort),
            # so the subscription ends with its connection: the SDK's documented
            # per-connection teardown, which the low-level context reaches only through
            # the session.
            connection = getattr(ctx.session, "_connection", None)
            exit_stack = getattr(connection, "exit_stack", None)
            if exit_stack is not None:
                exit_stack.callback(task.cancel)
        return types.EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        task = self._subscribed.pop((id(ctx.session), str(params.uri)), None)
        if task is not None:
            task.cancel()
        return types.EmptyResult()


async def pump(
    sub: Subscription, notify: Callable[[], Awaitable[None]], on_end: Callable[[], None]
) -> None:
    """Call ``notify`` after each batch of events of ``sub`` until it ends (overflow,
    shutdown: then ``on_end``) or the receiver is gone."""
    try:
        while True:
            frames = await sub.next()
            if frames is None:
                on_end()
                return
            if any(f.is_event for f in frames):
                await notify()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the session or stream is gone: nobody to notify
        logger.debug("resource notifications ended: %r", exc)
    finally:
        sub.close()

