"""A small HTTP/1.1 proxy in front of one local server (moto's S3, the local SageMaker API) that injects
network faults per request: answer an error instead of forwarding, drop the connection before or after the
server saw the request, hold requests until released, or go away entirely for a while (an outage).

Why a proxy and not a botocore event hook: the faults then reach the client the way real ones do, through
its HTTP stack and retry handler (a dropped connection is a `ConnectionClosedError`, a refused one an
`EndpointConnectionError`, a 503 is parsed from S3's XML), for clients the code under test builds itself
(the Airflow connection's hooks, a subprocess).

Why "outage" is the honest "S3 restarted": moto keeps objects in memory, so restarting its process would
lose every object, which S3 never does to acknowledged writes. What a client sees when an S3 front end
restarts is this: in-flight connections reset, new ones refused for a while, then service resumes with the
data intact. `outage()` does exactly that in front of a moto that keeps running.

Only for tests and benchmarks: one thread per client connection, one upstream connection per request.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

FORWARD = "forward"
RESPOND = "respond"  # answer `status`/`body` without forwarding
DROP = "drop"  # close the connection; the server never sees the request
DROP_RESPONSE = "drop_response"  # forward, let the server act, then close without answering (a lost response)
HOLD = "hold"  # wait until `release` is set (or the proxy stops), then forward


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def operation(self) -> str:
        """A short name for matching: `SageMaker.<Op>`, or S3's `CopyObject`/`PutObject`/`GetObject`/..."""
        amz_target = self.headers.get("x-amz-target", "")
        if amz_target:
            return amz_target
        if self.method == "PUT" and "x-amz-copy-source" in self.headers:
            return "CopyObject"
        return {
            "PUT": "PutObject",
            "GET": "GetObject",
            "HEAD": "HeadObject",
            "DELETE": "DeleteObject",
            "POST": "Post",
        }.get(self.method, self.method)


@dataclass
class Action:
    kind: str = FORWARD
    status: int = 503
    reason: str = "Service Unavailable"
    body: bytes = b""
    content_type: str = "application/xml"
    release: threading.Event | None = None


def s3_error(status: int, code: str, message: str) -> Action:
    """An S3 error answer, shaped like S3's (botocore parses the XML code)."""
    body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    reason = {500: "Internal Server Error", 503: "Slow Down"}.get(status, "Error")
    return Action(RESPOND, status, reason, body.encode())


def json_error(status: int, code: str, message: str) -> Action:
    """An error answer in the JSON 1.1 protocol (SageMaker's)."""
    import json

    body = json.dumps({"__type": code, "message": message}).encode()
    reason = {400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Error")
    return Action(RESPOND, status, reason, body, "application/x-amz-json-1.1")


Rule = Callable[[Request], Action | None]


@dataclass
class FaultProxy:
    """`with FaultProxy("http://127.0.0.1:5000") as proxy: proxy.url ...`; set `proxy.rule` to inject."""

    upstream: str
    rule: Rule | None = None
    seen: list[str] = field(default_factory=list)  # operations in arrival order
    _listener: socket.socket | None = field(default=None, init=False)
    _clients: set[socket.socket] = field(default_factory=set, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _stopped: threading.Event = field(default_factory=threading.Event, init=False)
    _accepting: threading.Event = field(default_factory=threading.Event, init=False)
    port: int = 0

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        self._upstream_addr = (parts.hostname or "127.0.0.1", parts.port or 80)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, operation: str) -> int:
        with self._lock:
            return sum(1 for seen in self.seen if seen == operation)

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._listen()
        threading.Thread(target=self._accept_loop, daemon=True, name="fault-proxy-accept").start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._close_listener()
        self._abort_clients()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def outage(self, seconds: float) -> None:
        """Reset every open connection and refuse new ones for `seconds` (in the background), then resume."""
        self._accepting.clear()
        self._close_listener()
        self._abort_clients()

        def resume() -> None:
            time.sleep(seconds)
            if not self._stopped.is_set():
                self._listen()

        threading.Thread(target=resume, daemon=True, name="fault-proxy-outage").start()

    # --- internals ------------------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(50):  # the port of an outage may take a moment to be bindable again
            try:
                listener.bind(("127.0.0.1", self.port))
                break
            except OSError:
                time.sleep(0.1)
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting.set()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _abort_clients(self) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                # SO_LINGER 0: close with a reset, as a crashed server's kernel does.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.shutdown(socket.SHUT_RDWR)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            if not self._accepting.wait(timeout=0.2):
                continue
            listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except OSError:
                continue  # closed for an outage or a stop
            with self._lock:
                self._clients.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True, name="fault-proxy-conn").start()

    def _serve(self, client: socket.socket) -> None:
        reader = client.makefile("rb")
        try:
            while not self._stopped.is_set():
                raw = _read_message(reader, is_request=True, on_head=lambda head: _continue(client, head))
                if raw is None:
                    return
                head, body = _without_expect(raw[0]), raw[1]
                request = _parse_request(head, body)
                with self._lock:
                    self.seen.append(request.operation)
                action = (self.rule(request) if self.rule else None) or Action()
                if action.kind == DROP:
                    return
                if action.kind == RESPOND:
                    client.sendall(_response(action))
                    continue
                if action.kind == HOLD and action.release is not None:
                    while not action.release.wait(timeout=0.1):
                        if self._stopped.is_set() or _closed(client):
                            return  # the client died while its request was held: the server never gets it
                answer = self._forward(head + body, request.method)
                if answer is None or action.kind == DROP_RESPONSE:
                    return
                client.sendall(answer)
        except OSError:
            return
        finally:
            with self._lock:
                self._clients.discard(client)
            with contextlib.suppress(OSError):
                reader.close()
                client.close()

    def _forward(self, request: bytes, method: str) -> bytes | None:
        with socket.create_connection(self._upstream_addr, timeout=120) as upstream:
            upstream.sendall(request)
            reader = upstream.makefile("rb")
            raw = _read_message(reader, is_request=False, head_only=method == "HEAD")
            return None if raw is None else raw[0] + raw[1]


def _closed(client: socket.socket) -> bool:
    """True when the peer has closed (or reset) the connection."""
    try:
        readable, _, _ = select.select([client], [], [], 0)
        return bool(readable) and client.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _continue(client: socket.socket, head: bytes) -> None:
    """botocore sends PUT bodies after `Expect: 100-continue`; answer it here (the server never sees it),
    or the client would wait a second for the interim answer on every upload."""
    if b"\r\nexpect: 100-continue" in head.lower():
        client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")


def _without_expect(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.lower().startswith(b"expect:"))


def _read_message(
    reader, is_request: bool, head_only: bool = False, on_head: Callable[[bytes], None] | None = None
) -> tuple[bytes, bytes] | None:
    """One HTTP message as (head bytes, body bytes, exactly as sent), or None at end of stream."""
    lines = []
    while True:
        line = reader.readline(65537)
        if not line:
            return None
        if not lines and line in (b"\r\n", b"\n"):
            continue  # tolerate a stray CRLF between keep-alive requests
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            break
    head = b"".join(lines)
    if on_head is not None:
        on_head(head)
    headers = _headers(lines[1:])
    status = 0 if is_request else int(lines[0].split()[1])
    if head_only or status in (204, 304) or 100 <= status < 200:
        return head, b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size_line = reader.readline()
            body += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    trailer = reader.readline()
                    body += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        return head, body
            body += reader.read(size + 2)
    if "content-length" in headers:
        return head, reader.read(int(headers["content-length"]))
    return head, (b"" if is_request else reader.read())  # a response without length ends at close


def _headers(lines: list[bytes]) -> dict[str, str]:
    headers = {}
    for line in lines:
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _parse_request(head: bytes, body: bytes) -> Request:
    lines = head.split(b"\r\n")
    method, target, _ = lines[0].decode("latin-1").split(" ", 2)
    return Request(method, target, _headers([line + b"\r\n" for line in lines[1:] if line]), body)


def _response(action: Action) -> bytes:
    head = (
        f"HTTP/1.1 {action.status} {action.reason}\r\nContent-Type: {action.content_type}\r\n"
        f"Content-Length: {len(action.body)}\r\nx-amzn-requestid: fault-proxy\r\n\r\n"
    )
    return head.encode("latin-1") + action.body
