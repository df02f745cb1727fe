"""The control operations on webhooks; each caller sees only its own (an administrator: all).

Another user's webhook is answered 404, exactly like one that does not exist.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

from primary.control import Handler, RequestError
from primary.job_ops import Caller
from primary.webhook_store import Webhook
from primary.webhook_targets import TargetRefused, check_at_creation
from primary.webhooks import WebhookDispatcher

MAX_PATTERNS = 20
MAX_PATTERN_LENGTH = 64
MAX_DELIVERIES_PAGE = 1000
PATTERN = re.compile(r"[a-z][a-z-]*:(?:[a-z][a-z-]*)?")


class WebhookOps:
    def __init__(self, dispatcher: WebhookDispatcher, last_seq: Callable[[], int], max_per_user: int) -> None:
        self._dispatcher = dispatcher
        self._last_seq = last_seq
        self._max_per_user = max_per_user

    def handlers(self) -> dict[str, Handler]:
        return {
            "create_webhook": self.create,
            "list_webhooks": self.list,
            "get_webhook": self.get,
            "delete_webhook": self.delete,
            "webhook_deliveries": self.deliveries,
        }

    def create(self, args: dict[str, Any]) -> dict[str, Any]:
        caller = Caller(args)
        try:
            check_at_creation(args.get("url"), self._dispatcher.settings.allow_private)
        except TargetRefused as e:
            raise RequestError(400, str(e)) from e
        events = _patterns(args.get("events"))
        if self._max_per_user and len(self._dispatcher.webhooks(caller.user_id)) >= self._max_per_user:
            raise RequestError(400, f"a user may have at most {self._max_per_user} webhooks")
        hook = Webhook(uuid.uuid4().hex[:16], caller.user_id, caller.admin, str(args["url"]), events,
                       secrets.token_hex(32), time.time() * 1000, self._last_seq())
        self._dispatcher.add(hook)
        return {**hook.public(), "secret": hook.secret}

    def list(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        caller = Caller(args)
        return [hook.public() for hook in self._dispatcher.webhooks(caller.owner_filter)]

    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._visible(args).public()

    def delete(self, args: dict[str, Any]) -> dict[str, Any]:
        hook = self._visible(args)
        self._dispatcher.remove(hook.id)
        return {"webhookId": hook.id, "deleted": True}

    def deliveries(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        hook = self._visible(args)
        limit, before = args.get("limit", 100), args.get("before")
        if not isinstance(limit, int) or not 0 < limit <= MAX_DELIVERIES_PAGE:
            raise RequestError(400, f"limit must be between 1 and {MAX_DELIVERIES_PAGE}")
        if before is not None and (not isinstance(before, int) or before < 0):
            raise RequestError(400, "before must be a seq (a whole number)")
        return self._dispatcher.deliveries(hook.id, limit, before)

    def _visible(self, args: dict[str, Any]) -> Webhook:
        caller = Caller(args)
        hook_id = args.get("webhookId")
        hook = self._dispatcher.get(hook_id) if isinstance(hook_id, str) else None
        if hook is None or not caller.may_see(hook.owner):
            raise RequestError(404, f"webhook {hook_id} not found")
        return hook


def _patterns(events: object) -> tuple[str, ...]:
    """Event names (``job:completed``) or families (``job:``); at least one, at most MAX_PATTERNS."""
    if not isinstance(events, list) or not events:
        raise RequestError(400, "events must be a non-empty list of event names or prefixes such as 'job:'")
    if len(events) > MAX_PATTERNS:
        raise RequestError(400, f"events may list at most {MAX_PATTERNS} names")
    for name in events:
        if not isinstance(name, str) or len(name) > MAX_PATTERN_LENGTH or not PATTERN.fullmatch(name):
            raise RequestError(400, "each of events is an event name ('job:completed') or a prefix ('job:')")
    return tuple(dict.fromkeys(events))
