"""Fixtures of the unit tests: a document server on 127.0.0.1 and a clock moved by hand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from placement_server import Clock, DocumentServer


@pytest.fixture
def server() -> Iterator[DocumentServer]:
    document_server = DocumentServer()
    document_server.start()
    try:
        yield document_server
    finally:
        document_server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()
