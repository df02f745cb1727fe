"""Webhook delivery: each published event a webhook may hear becomes a delivery, POSTed signed, in seq
order per webhook, retried with back-off, kept in the store across restarts.

The dispatcher hears events after they are stored and published (an EventBus subscriber) and writes
their deliveries in a small transaction of its own; a cursor (the last seq handled) lets a restart
replay, from the stored events, whatever a kill cut off between the two. Each webhook has one task
that sends its deliveries one after another, so a slow receiver holds back only its own webhook.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from cluster.logs import get_logger
from cluster.protocol import Event
from primary.metrics import Exposition
from primary.retry import compute_backoff_ms
from primary.webhook_store import AttemptRecord, Delivery, DeliveryState, Webhook, WebhookStore
from primary.webhook_targets import TargetRefused, literal_address, parse_url, resolve_checked

log = get_logger()

CATCH_UP_PAGE = 1000
MAINTENANCE_INTERVAL_S = 5.0
KEEP_DELIVERIES_PER_WEBHOOK = 1000
MAX_RESPONSE_BYTES = 64 * 1024  # read (and drop) this much of an answer, so the connection can be reused
MAX_ERROR_CHARS = 300
ERROR_PAUSE_S = 1.0
USER_AGENT = "video-cluster-webhooks/1"

OUTCOMES = ("delivered", "retrying", "failed", "refused")  # of one try; failed: the last try, given up

EventsSince = Callable[[int, int], list[Event]]


@dataclass(frozen=True)
class WebhookSettings:
    max_attempts: int = 6
    retry_initial_ms: int = 2000
    timeout_s: float = 10.0
    allow_private: bool = False
    max_concurrency: int = 64  # POSTs in flight across all webhooks


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def pattern_matches(patterns: tuple[str, ...], name: str) -> bool:
    """``job:completed`` matches that event; a pattern ending in ``:`` (``job:``) matches the family."""
    return any(name == p or (p.endswith(":") and name.startswith(p)) for p in patterns)


def may_hear(hook: Webhook, event: Event) -> bool:
    """As on the WebSocket: its owner's jobs (every job for an administrator's) and cluster notices."""
    if hook.owner_admin:
        return True
    if "userId" in event.data:
        return event.data["userId"] == hook.owner
    return "jobId" not in event.data and "pipelineId" not in event.data


class WebhookDispatcher:
    def __init__(self, store: WebhookStore, settings: WebhookSettings, events_since: EventsSince,
                 owner_exists: Callable[[str], bool] = lambda _user_id: True) -> None:
        self._store = store
        self._owner_exists = owner_exists  # a removed user's webhooks go with them
        self.settings = settings
        self._events_since = events_since
        self._hooks: dict[str, Webhook] = {hook.id: hook for hook in store.all()}
        self._wake: dict[str, asyncio.Event] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._maintenance: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._seen_seq = store.seen_seq()
        self._seen_saved = self._seen_seq
        self.outcomes: Counter[str] = Counter({outcome: 0 for outcome in OUTCOMES})

    # life

    def catch_up(self) -> int:
        """Write the deliveries of stored events the cursor has not passed (a kill between an event and its
        deliveries); call before any new event is published. Returns how many deliveries it wrote."""
        if not self._hooks:
            return 0
        since, written = max(self._seen_seq, min(h.created_seq for h in self._hooks.values())), 0
        while events := self._events_since(since, CATCH_UP_PAGE):
            rows = [row for event in events for row in self._rows_for(event)]
            since = events[-1].seq
            self._write(rows, since)
            written += len(rows)
        if written:
            log.info("webhook deliveries recovered from the event log", count=written)
        return written

    def start(self) -> None:
        for hook_id in self._hooks:
            self._start_worker(hook_id)
        self._maintenance = asyncio.create_task(self._maintain())

    async def close(self) -> None:
        """In-flight attempts are abandoned unrecorded: they run again after a restart (at least once)."""
        tasks = [*self._workers.values(), *([self._maintenance] if self._maintenance else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._save_cursor()

    # webhooks come and go

    def add(self, hook: Webhook) -> None:
        self._store.add(hook)
        self._hooks[hook.id] = hook
        self._start_worker(hook.id)

    def remove(self, hook_id: str) -> None:
        self._hooks.pop(hook_id, None)
        self._wake.pop(hook_id, None)
        worker = self._workers.pop(hook_id, None)
        if worker is not None:
            worker.cancel()
        self._store.remove(hook_id)

    def get(self, hook_id: str) -> Webhook | None:
        return self._hooks.get(hook_id)

    def webhooks(self, owner: str | None = None) -> list[Webhook]:
        return [h for h in self._hooks.values() if owner is None or h.owner == owner]

    def deliveries(self, hook_id: str, limit: int, before: int | None) -> list[dict[str, Any]]:
        return self._store.deliveries(hook_id, limit, before)

    # events

    def on_event(self, event: Event) -> None:
        """An EventBus subscriber: the event is stored and published already."""
        rows = self._rows_for(event)
        if not rows:
            self._seen_seq = event.seq  # saved by the maintenance task: replaying a few events is harmless
            return
        try:
            self._write(rows, event.seq)
        except sqlite3.Error:
            log.exception("webhook deliveries not written: they are replayed at the next start", seq=event.seq)
            return
        for hook_id, *_ in rows:
            self._wake[hook_id].set()

    def _rows_for(self, event: Event) -> list[tuple[str, int, str, bytes]]:
        hooks = [h for h in self._hooks.values() if event.seq > h.created_seq and pattern_matches(h.events, event.event)
                 and may_hear(h, event)]
        if not hooks:
            return []
        body = event.body()
        return [(h.id, event.seq, event.event, body) for h in hooks]

    def _write(self, rows: list[tuple[str, int, str, bytes]], seen_seq: int) -> None:
        self._store.add_deliveries(rows, seen_seq)
        self._seen_seq = self._seen_saved = max(self._seen_seq, seen_seq)

    def _save_cursor(self) -> None:
        if self._seen_seq != self._seen_saved:
            self._store.set_seen_seq(self._seen_seq)
            self._seen_saved = self._seen_seq

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL_S)
            self._save_cursor()
            self._store.prune(KEEP_DELIVERIES_PER_WEBHOOK)
            for hook in [h for h in self._hooks.values() if not self._owner_exists(h.owner)]:
                log.info("webhook removed with its user", webhookId=hook.id, userId=hook.owner)
                self.remove(hook.id)

    def render_metrics(self, out: Exposition) -> None:
        out.family("vc_webhook_deliveries_total", "counter",
                   "webhook delivery tries since the primary started, by outcome",
                   [({"outcome": outcome}, count) for outcome, count in sorted(self.outcomes.items())])

    # sending

    def _start_worker(self, hook_id: str) -> None:
        self._wake[hook_id] = asyncio.Event()
        task = asyncio.create_task(self._serve(hook_id))
        task.add_done_callback(_log_crash)
        self._workers[hook_id] = task

    async def _serve(self, hook_id: str) -> None:
        """One webhook's deliveries in seq order: the next waits until this one succeeds or gives up."""
        wake = self._wake[hook_id]
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                     limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)) as client:
            while hook_id in self._hooks:
                wake.clear()
                delivery = self._store.next_pending(hook_id)
                if delivery is None:
                    await wake.wait()
                    continue
                delay_s = (delivery.next_attempt_at - time.time() * 1000) / 1000
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
                    continue
                try:
                    await self._attempt(client, self._hooks[hook_id], delivery)
                except (sqlite3.Error, ValueError):  # a fault of ours, not the receiver's: try again soon
                    log.exception("webhook delivery not recorded", webhookId=hook_id, seq=delivery.seq)
                    await asyncio.sleep(ERROR_PAUSE_S)

    async def _attempt(self, client: httpx.AsyncClient, hook: Webhook, delivery: Delivery) -> None:
        number = delivery.attempts + 1
        async with self._slots:  # the timeout starts once a slot is had: it is the receiver's time
            started_at, started = time.time() * 1000, time.monotonic()
            status, error, refused = await self._try(client, hook, delivery)
            duration_ms = (time.monotonic() - started) * 1000
        record = AttemptRecord(number, started_at, duration_ms, status, error[:MAX_ERROR_CHARS] if error else None)
        state, next_at, outcome = self._decide(number, error, refused)
        self._store.record_attempt(delivery, record, state, next_at)
        self.outcomes[outcome] += 1
        log.info("webhook delivery", outcome=outcome, webhookId=hook.id, seq=delivery.seq, eventName=delivery.event,
                 attempt=number, statusCode=status, error=record.error, durationMs=round(duration_ms, 1))

    async def _try(self, client: httpx.AsyncClient, hook: Webhook,
                   delivery: Delivery) -> tuple[int | None, str | None, bool]:
        """(status code, error, refused): error is None for a 2xx answer."""
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                status = await self._post(client, hook, delivery)
        except TargetRefused as e:
            return None, str(e), True
        except TimeoutError:
            return None, f"no answer within {self.settings.timeout_s:g} s", False
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as e:
            return None, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__, False
        return status, None if 200 <= status < 300 else f"HTTP {status}", False

    def _decide(self, number: int, error: str | None, refused: bool) -> tuple[DeliveryState, float, str]:
        now = time.time() * 1000
        if error is None:
            return DeliveryState.DELIVERED, now, "delivered"
        if refused:
            return DeliveryState.FAILED, now, "refused"
        if number >= self.settings.max_attempts:
            return DeliveryState.FAILED, now, "failed"
        return DeliveryState.PENDING, now + compute_backoff_ms(number - 1, self.settings.retry_initial_ms), "retrying"

    async def _post(self, client: httpx.AsyncClient, hook: Webhook, delivery: Delivery) -> int:
        """POST to the checked address, with the URL's own host in ``Host`` (and in TLS's SNI and checks)."""
        target = parse_url(hook.url)
        address = await resolve_checked(target, self.settings.allow_private)
        url = httpx.URL(hook.url)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "X-VC-Event": delivery.event,
                   "X-VC-Delivery": str(delivery.seq), "X-VC-Signature": signature(hook.secret, delivery.body),
                   "Host": url.netloc.decode("ascii")}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" and literal_address(
            target.host) is None else {}
        async with client.stream("POST", url.copy_with(host=str(address)), content=delivery.body, headers=headers,
                                 extensions=extensions) as response:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > MAX_RESPONSE_BYTES:
                    break
            return response.status_code


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a webhook's delivery task stopped", error=repr(task.exception())[:MAX_ERROR_CHARS])
