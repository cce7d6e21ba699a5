"""A small stdlib SSE client that speaks the bench protocol, for the tests of ``arkor-trio bench``.

Correct by default (WHATWG EventSource rules: an id takes effect when its event is dispatched, a
cut block is dropped, ``retry:`` and ``Retry-After`` are honoured, ``Last-Event-ID`` is sent on
every reconnect). ``--defect`` gives it exactly one bug; the ``--misbehave`` modes are hostile
processes rather than clients. With ``--log DIR`` every line it prints is also appended to a file
of its own in DIR (named so that runs sort in start order), for the tests to compare with.

Usage: ``python sse_client.py URL [--defect NAME] [--delay S] [--log DIR] [--misbehave NAME]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
import urllib.parse

DEFECTS = ("no-leid", "partial", "quit-5xx", "fixed-delay", "reorder")
MISBEHAVIOURS = ("silent", "garbage", "flood", "ignore-term", "fork", "linger")


class Cut(Exception):
    """The connection ended before the stream did."""


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.defect = args.defect
        self.last_id: str | None = None
        self.retry = 0.5
        self.held: tuple[str | None, str, str] | None = None
        self.log = None
        if args.log:
            name = f"{time.monotonic_ns():020d}-{os.getpid()}.jsonl"
            self.log = open(os.path.join(args.log, name), "a", encoding="utf-8")  # noqa: SIM115

    def emit(self, event_id: str | None, event: str, data: str, tag: str = "") -> None:
        line = json.dumps({"id": event_id, "event": event, "data": data})
        print(line, flush=True)
        if self.log is not None:  # what was printed, and why when it was a deliberate defect
            self.log.write(json.dumps({"line": line, "tag": tag}) + "\n")
            self.log.flush()
        if data == '{"final": true}':
            if self.args.misbehave == "linger":
                signal.pause()  # lingers until the bench stops it
            sys.exit(0)

    def dispatch(self, event_id: str | None, event: str, data: str, tag: str = "") -> None:
        if self.defect != "reorder":
            self.emit(event_id, event, data, tag)
        elif self.held is None and data != '{"final": true}':
            self.held = (event_id, event, data)
        else:  # the later event first, then the one held back
            self.emit(event_id, event, data) if data != '{"final": true}' else None
            held, self.held = self.held, None
            if held is not None:
                self.emit(*held, tag="late")
            if data == '{"final": true}':
                self.emit(event_id, event, data)

    def run(self) -> None:
        url = urllib.parse.urlsplit(self.args.url)
        while True:
            wait = None
            try:
                status, headers, body = self.connect(url)
                if status != 200:
                    if status >= 500 and self.defect == "quit-5xx":
                        sys.exit(1)
                    if "retry-after" in headers:
                        wait = float(headers["retry-after"])
                else:
                    self.read_stream(body)
            except (OSError, Cut):
                pass
            time.sleep(self.args.delay if self.defect == "fixed-delay" else wait or self.retry)

    def connect(self, url: urllib.parse.SplitResult) -> tuple[int, dict[str, str], socket.socket]:
        sock = socket.create_connection((url.hostname, url.port), timeout=5)
        sock.settimeout(0.5)  # an idle stream is a dead one
        lines = [f"GET {url.path or '/'} HTTP/1.1", f"Host: {url.netloc}",
                 "Accept: text/event-stream", "Connection: close"]  # fmt: skip
        if self.last_id is not None and self.defect != "no-leid":
            lines.append(f"Last-Event-ID: {self.last_id}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise Cut
            head += chunk
        raw_head, rest = head.split(b"\r\n\r\n", 1)
        first, *fields = raw_head.decode("latin-1").split("\r\n")
        headers = {}
        for field in fields:
            name, _, value = field.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.rest = rest
        return int(first.split()[1]), headers, sock

    def body_pieces(self, sock: socket.socket):  # de-chunk; Cut when the body is not finished
        buffer = self.rest
        while True:
            while b"\r\n" not in buffer:
                buffer += self.recv(sock)
            size_line, buffer = buffer.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return
            while len(buffer) < size + 2:
                try:
                    buffer += self.recv(sock)
                except Cut:
                    yield buffer[:size]
                    raise
            yield buffer[:size]
            buffer = buffer[size + 2 :]

    def recv(self, sock: socket.socket) -> bytes:
        try:
            chunk = sock.recv(65536)
        except OSError:
            raise Cut from None
        if not chunk:
            raise Cut
        return chunk

    def read_stream(self, sock: socket.socket) -> None:
        text, data, event, block_id = "", [], "", None
        with sock:
            try:
                for piece in self.body_pieces(sock):
                    text += piece.decode()
                    while True:
                        cut = min((i for i in (text.find("\r"), text.find("\n")) if i >= 0),
                                  default=-1)  # fmt: skip
                        if cut < 0 or (text[cut] == "\r" and cut == len(text) - 1):
                            break
                        line = text[:cut]
                        text = text[cut + (2 if text.startswith("\r\n", cut) else 1) :]
                        if line == "":
                            if block_id is not None:
                                self.last_id = block_id
                            if data:
                                self.dispatch(self.last_id, event or "message", "\n".join(data))
                            data, event, block_id = [], "", None
                            continue
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if name == "data":
                            data.append(value)
                        elif name == "event":
                            event = value
                        elif name == "id":
                            block_id = value
                        elif name == "retry" and value.isdigit():
                            self.retry = int(value) / 1000
            except Cut:
                if self.defect == "partial":  # the cut block's half is handed on as if whole
                    if text.startswith("data:"):
                        data.append(text[5:].lstrip(" "))
                    if data:
                        self.last_id = block_id or self.last_id
                        self.dispatch(self.last_id, event or "message", "\n".join(data), "partial")
                raise


def misbehave(name: str, log: str | None) -> None:
    if name == "silent":
        signal.pause()  # silent until the bench stops it
    elif name == "garbage":
        for n in range(50):
            print(f"not json {n} {{", flush=True)
        print('{"no": "data key"}', flush=True)
        sys.exit(3)
    elif name == "flood":
        block = b"x" * 65536
        while True:
            sys.stdout.buffer.write(block)
            if os.urandom(1)[0] < 8:
                sys.stdout.buffer.write(b"\n")
    elif name == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.pause()  # until the bench's SIGKILL
    elif name == "fork":
        child = os.fork()
        if child == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.pause()  # until the bench kills the group with SIGKILL
            os._exit(0)
        if log:
            with open(os.path.join(log, "child.pid"), "w") as out:
                out.write(str(child))
        print("a parent that leaves its child behind", flush=True)
        sys.exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--defect", choices=DEFECTS)
    parser.add_argument("--delay", type=float, default=0.3)
    parser.add_argument("--log")
    parser.add_argument("--misbehave", choices=MISBEHAVIOURS)
    args = parser.parse_args()
    if args.misbehave and args.misbehave != "linger":
        misbehave(args.misbehave, args.log)
    Client(args).run()


if __name__ == "__main__":
    main()
