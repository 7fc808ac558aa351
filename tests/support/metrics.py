"""Scrape a server's Prometheus /metrics over real HTTP and read samples."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from hello_server import ChatServer
from tests.support import within

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def http_get(port: int, path: str) -> tuple[str, str]:
    """GET ``path`` from 127.0.0.1:``port``; return the status line and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        response = await within(reader.read())
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.decode().partition("\r\n\r\n")
    return head.split("\r\n")[0], body


async def scrape(server: ChatServer) -> Samples:
    metrics_port = server.metrics.port if server.metrics else None
    assert metrics_port is not None
    status, body = await http_get(metrics_port, "/metrics")
    assert status == "HTTP/1.1 200 OK"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]
