"""What the local backend answers before any gate: the CLI config, deployments, unknown routes.

- ``GET /v1/auth/cli/config`` (no token, as on the cloud): this backend has no OAuth, so it
  answers as an anonymous-only deployment does, ``{auth0Domain: null, clientId: null,
  audience: null, callbackPorts: []}``; the TypeScript SDK's ``arkor login`` then says OAuth
  is not available instead of failing on a 401. An ``X-Arkor-Client`` outside the supported
  range still gets the 426.
- ``/d/<slug>/...``: a deployment's OpenAI-compatible URL (``_deploy_serve``), which has its
  own keys.
- A ``/v1/`` path that no route serves is a 404 ``{"error": "no route ..."}`` whoever asks: a
  401 would claim the path exists. The route table is public (it is the wire protocol), so
  the 404 tells nothing more. A known path keeps its gates (426, 401, 403) as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Match

from ._auth import answer_json, version_refusal
from ._deployments import DEPLOY_PATH_PREFIX

if TYPE_CHECKING:
    from collections.abc import Sequence

    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["CLI_CONFIG", "CLI_CONFIG_PATH", "PublicFront"]

CLI_CONFIG_PATH = "/v1/auth/cli/config"
#: An anonymous-only deployment's answer (no OAuth provider).
CLI_CONFIG: dict[str, object] = {
    "auth0Domain": None,
    "clientId": None,
    "audience": None,
    "callbackPorts": [],
}
#: Paths answered before the token gate by the browser gate (not in the route table).
_GATE_PATHS = frozenset({"/v1/auth/anonymous"})


class PublicFront:
    """ASGI middleware answering the paths of the module docstring; the rest goes on to ``app``.

    Args:
        app: The browser gate and everything behind it.
        routes: The API's route table (to tell an unknown path).
        deployments: The deployment URL handler.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], deployments: ASGIApp) -> None:
        self.app = app
        self.routes = routes
        self.deployments = deployments

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer or pass on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == CLI_CONFIG_PATH:
            await _cli_config(scope, send)
        elif path.startswith(DEPLOY_PATH_PREFIX):
            await self.deployments(scope, receive, send)
        elif path.startswith("/v1/") and path not in _GATE_PATHS and not self._known(scope):
            message = f"no route {scope['method']} {path[:200]}"
            await answer_json(send, 404, {"error": message})
        else:
            await self.app(scope, receive, send)

    def _known(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is not Match.NONE for route in self.routes)


async def _cli_config(scope: Scope, send: Send) -> None:
    headers = dict(scope["headers"])
    refusal = version_refusal(headers.get(b"x-arkor-client"), headers.get(b"user-agent"))
    if refusal is not None:
        await answer_json(send, 426, refusal)
    elif scope["method"] != "GET":
        await answer_json(
            send, 405, {"error": f"method {scope['method']} not allowed on {CLI_CONFIG_PATH}"}
        )
    else:
        await answer_json(send, 200, CLI_CONFIG)
