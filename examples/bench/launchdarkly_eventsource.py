"""LaunchDarkly's Python eventsource speaking the bench protocol.

``pip install launchdarkly-eventsource``, then
``arkor-trio bench -- python examples/bench/launchdarkly_eventsource.py {url}``. Its defaults,
except ``ErrorStrategy.always_continue()`` (the default, ``always_fail``, never reconnects): it
waits the stream's ``retry:`` (or 1 s), doubled on every reconnect with jitter, reset only after a
connection that lasted 60 s.
"""

from __future__ import annotations

import json
import sys

from ld_eventsource import SSEClient
from ld_eventsource.config import ErrorStrategy


def main(url: str) -> None:
    with SSEClient(url, error_strategy=ErrorStrategy.always_continue()) as client:
        for event in client.events:
            print(json.dumps({"id": event.id, "event": event.event, "data": event.data}),
                  flush=True)  # fmt: skip
            if event.data == '{"final": true}':
                return


if __name__ == "__main__":
    main(sys.argv[1])
