"""``Infer``: chat inference on one adapter, the ``infer`` helper of a checkpoint's context."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager
    from typing import Unpack

    from ..wire._chat import ChatOptions, Messages
    from ..wire._client import ArkorClient
    from ..wire._models import Adapter, ChatCompletion

__all__ = ["Infer"]


class Infer:
    """Chat inference on one adapter (a checkpoint's, in ``CheckpointContext.infer``).

    Each call is one request; nothing is cached. Errors are those of ``ArkorClient.chat``.

    Args:
        client: The client whose base URL, token and scope the requests use.
        adapter: The weights to run.
    """

    def __init__(self, client: ArkorClient, adapter: Adapter) -> None:
        self.client = client
        self.adapter = adapter

    def __repr__(self) -> str:
        return f"Infer(adapter={self.adapter!r})"

    async def __call__(self, messages: Messages, **options: Unpack[ChatOptions]) -> ChatCompletion:
        """Run one non-streaming chat completion on the adapter.

        Args:
            messages: Chat messages, each a mapping with ``role`` (system, user, assistant,
                tool) and the OpenAI fields for that role.
            **options: ``temperature``, ``top_p``, ``max_tokens``, ``tools``, ``tool_choice``,
                ``response_format``, ``structured_outputs`` (see :class:`ChatOptions`).

        Returns:
            The parsed completion (``.text``, ``.tool_calls``, ``.finish_reason``, ``.raw``).

        Raises:
            ConfigError: An invalid argument, named.
            ApiError: The backend refused the request, or answered something unparseable.
        """
        return await self.client.chat(messages, adapter=self.adapter, **options)

    def stream(
        self, messages: Messages, **options: Unpack[ChatOptions]
    ) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Stream a chat completion on the adapter as text deltas.

        Use as ``async with infer.stream(messages) as deltas: async for text in deltas: ...``;
        leaving the block closes the response. Arguments and errors are those of the call form.
        """
        return self.client.chat_stream(messages, adapter=self.adapter, **options)
