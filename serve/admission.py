"""Admission control: the cap on in-flight generation requests, and draining on shutdown."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from prometheus_client import Gauge

from serve.errors import ServiceUnavailableError, TooManyRequestsError

logger = logging.getLogger(__name__)


@dataclass
class Ticket:
    """One admitted HTTP request and the engine request ids it has started."""

    request_id: str
    engine_ids: set[str] = field(default_factory=set)


class Admission:
    """Admits at most `max_in_flight` generation requests at once (429 beyond), none while
    draining (503), and knows every running engine request so shutdown can abort them."""

    def __init__(self, max_in_flight: int, gauge: Gauge | None = None):
        self.max_in_flight = max_in_flight
        self._gauge = gauge
        self._tickets: dict[str, Ticket] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    @property
    def in_flight(self) -> int:
        return len(self._tickets)

    def admit(self, request_id: str) -> Ticket:
        """A ticket for `request_id`, or an error if the server is full or shutting down."""
        if self.draining:
            raise ServiceUnavailableError("Server is shutting down; retry on another replica",
                                          code="shutting_down")
        if len(self._tickets) >= self.max_in_flight:
            raise TooManyRequestsError(
                f"Too many requests in flight (limit {self.max_in_flight}); retry later",
                code="too_many_requests")
        ticket = Ticket(request_id)
        self._tickets[request_id] = ticket
        self._idle.clear()
        self._update_gauge()
        return ticket

    def release(self, ticket: Ticket) -> None:
        """Forget `ticket` (idempotent)."""
        if self._tickets.pop(ticket.request_id, None) is not None:
            self._update_gauge()
        if not self._tickets:
            self._idle.set()

    def running_engine_ids(self) -> list[str]:
        return [eid for t in self._tickets.values() for eid in t.engine_ids]

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests and wait up to `timeout_s` for in-flight ones; True if idle."""
        self.draining = True
        if not self._tickets:
            return True
        logger.info("draining %d in-flight requests (up to %.0f s)", len(self._tickets),
                    timeout_s)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)
            return True
        except TimeoutError:
            return False

    def _update_gauge(self) -> None:
        if self._gauge is not None:
            self._gauge.set(len(self._tickets))
