"""A real OTLP receiver for tests, on 127.0.0.1: gRPC (TraceService + MetricsService) and
HTTP/protobuf (POST /v1/traces, /v1/metrics). Both decode the requests with the OTLP protobuf
classes and keep them, thread-safely, for assertions.

    with GrpcReceiver() as receiver:         # or HttpReceiver()
        ...export to receiver.endpoint...
        receiver.span_names()
"""

from __future__ import annotations

import gzip
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

TraceRequest = trace_service_pb2.ExportTraceServiceRequest
MetricsRequest = metrics_service_pb2.ExportMetricsServiceRequest


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def attributes(pairs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


class _Store:
    """Decoded requests, appended from server threads."""

    max_body_bytes: int | None = None  # OTLP/HTTP: a larger body is refused with 413
    prefix = ""  # OTLP/HTTP: the path the signal paths are under

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.trace_requests: list[Any] = []
        self.metric_requests: list[Any] = []
        # OTLP/HTTP only: every request's body (gzip undone) and headers (lower-case names), as
        # sent — for tests that scan the bytes on the wire
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []

    def add_raw(self, body: bytes, headers: dict[str, str]) -> None:
        with self._lock:
            self.bodies.append(body)
            self.headers.append(headers)

    def add_traces(self, request: Any) -> None:
        with self._lock:
            self.trace_requests.append(request)

    def add_metrics(self, request: Any) -> None:
        with self._lock:
            self.metric_requests.append(request)

    def spans(self) -> list[Span]:
        with self._lock:
            requests = list(self.trace_requests)
        return [
            span
            for request in requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def span_names(self) -> list[str]:
        return [span.name for span in self.spans()]

    def resource_attributes(self) -> dict[str, Any]:
        with self._lock:
            requests = list(self.trace_requests) + list(self.metric_requests)
        for request in requests:
            for rs in getattr(request, "resource_spans", []) or request.resource_metrics:
                return attributes(rs.resource.attributes)
        return {}

    def metrics(self) -> dict[str, Any]:
        """Metric name → the last received Metric message of that name."""
        with self._lock:
            requests = list(self.metric_requests)
        out: dict[str, Any] = {}
        for request in requests:
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        out[metric.name] = metric
        return out

    def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return bool(predicate(self))


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: _Store) -> None:
        self.store = store

    def Export(self, request: Any, context: Any) -> Any:
        self.store.add_traces(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, store: _Store) -> None:
        self.store = store

    def Export(self, request: Any, context: Any) -> Any:
        self.store.add_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class GrpcReceiver(_Store):
    """OTLP/gRPC on 127.0.0.1 (a free port); ``endpoint`` is ``http://127.0.0.1:PORT``. gRPC's
    default server limits: a request over 4 MiB is refused, as by a default Collector."""

    protocol = "grpc"

    def __init__(self) -> None:
        super().__init__()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _TraceServicer(self), self._server
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _MetricsServicer(self), self._server
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GrpcReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop(grace=None).wait(5)


class _Handler(http.server.BaseHTTPRequestHandler):
    store: _Store  # set on the per-receiver subclass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        limit = self.store.max_body_bytes
        if limit is not None and length > limit:  # as a collector over max_request_body_size
            self.rfile.read(length)
            self.send_error(413)
            return
        body = self.rfile.read(length)
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.store.add_raw(body, {k.lower(): v for k, v in self.headers.items()})
        path = self.path.removeprefix(self.store.prefix)
        if path == "/v1/traces":
            request: Any = TraceRequest()
            request.ParseFromString(body)
            self.store.add_traces(request)
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        elif path == "/v1/metrics":
            request = MetricsRequest()
            request.ParseFromString(body)
            self.store.add_metrics(request)
            reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return


class HttpReceiver(_Store):
    """OTLP/HTTP protobuf on 127.0.0.1 (a free port); ``endpoint`` is ``http://127.0.0.1:PORT``.
    ``prefix``: the signal paths are under it (``/tenant/v1/traces``), as behind a gateway."""

    protocol = "http/protobuf"

    def __init__(self, max_body_bytes: int | None = None, prefix: str = "") -> None:
        super().__init__()
        self.max_body_bytes = max_body_bytes
        self.prefix = prefix
        handler = type("BoundHandler", (_Handler,), {"store": self})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HttpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class SilentCollector:
    """Accepts TCP connections on 127.0.0.1 and never answers: a collector that hangs."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self.port = self._socket.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.connections.append(connection)  # held open, never read or answered

    def __enter__(self) -> SilentCollector:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in self.connections:
            connection.close()
        self._socket.close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
