"""Agents' face (API.md section 12): the MCP server at /mcp, on the same backend parts
and the same access layer as /v1. Importing this package does not import the MCP SDK
(app.mcp.server does, on the first /mcp request)."""

from app.mcp.endpoint import McpEndpoint, McpRuntime
from app.mcp.tools import TOOL_NAMES, Parts

__all__ = ["TOOL_NAMES", "McpEndpoint", "McpRuntime", "Parts"]
