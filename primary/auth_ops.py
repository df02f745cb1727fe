"""The control operations on accounts: login (the password is checked by the web worker, off this loop),
sessions and profiles. Failed logins, and login attempts per minute, are counted here per (name, address)
and per address, so the limits hold across web workers and nobody can lock out an account from elsewhere."""

from __future__ import annotations

from typing import Any

from cluster.logs import clip, get_logger
from cluster.passwords import new_token, token_hash
from cluster.protocol import AccountOp
from primary.accounts import AccountError, AccountStore
from primary.control import Handler, RequestError
from primary.job_ops import Caller
from primary.limits import LoginFailures, pair_key
from primary.rate_limits import RateLimits
from primary.session_events import SessionNotices

log = get_logger()

# Checked when the name is unknown, so that a missing user costs the same time as a wrong password.
DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
MAX_NAME_LENGTH = 64  # the web worker refuses longer names before asking; this is the primary's own guard


class AuthOps:
    def __init__(self, accounts: AccountStore, limiter: LoginFailures, session_ttl_s: float,
                 rates: RateLimits | None = None, notices: SessionNotices | None = None) -> None:
        self._accounts = accounts
        self._notices = notices
        self._limiter = limiter
        self._rates = rates or RateLimits({})
        self._session_ttl_s = session_ttl_s

    def handlers(self) -> dict[str, Handler]:
        return {
            "login_check": self.login_check,
            "login_done": self.login_done,
            "session": self.session,
            "logout": self.logout,
            "update_user": self.update_user,
            AccountOp.SET_PASSWORD.value: self.set_password,
            AccountOp.REMOVE.value: self.remove_user,
        }

    def login_check(self, args: dict[str, Any]) -> dict[str, Any]:
        name, address = _name_and_address(args)
        retry_after = (self._limiter.retry_after_s(name, address)
                       or self._rates.take("login", pair_key(name, address), f"ip:{address}"))
        if retry_after > 0:
            return {"allowed": False, "retryAfter": retry_after}
        user = self._accounts.user_by_name(name)
        if user is None:
            return {"allowed": True, "userId": None, "passwordHash": DUMMY_HASH}
        return {"allowed": True, "userId": user.id, "passwordHash": user.password_hash}

    def login_done(self, args: dict[str, Any]) -> dict[str, Any]:
        name, address = _name_and_address(args)
        user = self._accounts.user_by_id(str(args.get("userId") or ""))
        if not args.get("ok") or user is None:
            self._limiter.fail(name, address)
            log.warning("login failed", username=clip(name), ip=clip(address))
            raise RequestError(401, "wrong user name or password")
        self._limiter.succeed(name, address)
        token = new_token()
        expires_at = self._accounts.create_session(user.id, token, self._session_ttl_s)
        log.info("logged in", userId=user.id)
        return {"token": token, "expiresAt": expires_at, "user": user.public()}

    def session(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._accounts.session_user(str(args.get("token", "")))
        if user is None:
            raise RequestError(401, "not logged in (or the session expired)")
        return user.public()

    def logout(self, args: dict[str, Any]) -> dict[str, Any]:
        token = str(args.get("token", ""))
        user_id = self._accounts.end_session(token)
        if user_id is not None:
            self._ended(user_id, [token_hash(token)], "logout")
        return {"loggedOut": True}

    def update_user(self, args: dict[str, Any]) -> dict[str, Any]:
        """A new display name is seen at once everywhere; a new password ends the user's other sessions
        (the one that changed it stays, so the page that did it stays logged in)."""
        caller = Caller(args)
        if self._accounts.user_by_id(caller.user_id) is None:
            raise RequestError(401, "no such user")
        try:
            if args.get("name") is not None:
                self._accounts.set_display_name(caller.user_id, str(args["name"]))
                if self._notices:
                    self._notices.user_changed(caller.user_id)
            if args.get("passwordHash"):
                ended = self._accounts.set_password_hash(caller.user_id, str(args["passwordHash"]),
                                                         keep_token_hash=str(args.get("tokenHash") or ""))
                self._ended(caller.user_id, ended, "password changed")
        except AccountError as e:
            raise RequestError(400, str(e)) from e
        return self._public(caller.user_id)

    def set_password(self, args: dict[str, Any]) -> dict[str, Any]:
        """``run_cluster.py user passwd``: every session of the user ends."""
        user = self._accounts.user_by_name(str(args.get("name", "")))
        if user is None:
            raise RequestError(404, f"no user {args.get('name')!r}")
        self._ended(user.id, self._accounts.set_password_hash(user.id, str(args["passwordHash"])), "password set")
        return user.public()

    def remove_user(self, args: dict[str, Any]) -> dict[str, Any]:
        """``run_cluster.py user remove``: the user and every session of it."""
        removed = self._accounts.remove_user(str(args.get("name", "")))
        if removed is None:
            raise RequestError(404, f"no user {args.get('name')!r}")
        user, ended = removed
        self._ended(user.id, ended, "user removed")
        return user.public()

    def _ended(self, user_id: str, token_hashes: list[str], reason: str) -> None:
        if self._notices:
            self._notices.ended(user_id, token_hashes, reason)

    def _public(self, user_id: str) -> dict[str, Any]:
        user = self._accounts.user_by_id(user_id)
        if user is None:
            raise RequestError(401, "no such user")
        return user.public()


def _name_and_address(args: dict[str, Any]) -> tuple[str, str]:
    name, address = args.get("username"), args.get("ip")
    if not isinstance(name, str) or not isinstance(address, str):
        raise RequestError(400, "username and ip must be strings")
    if len(name) > MAX_NAME_LENGTH:
        raise RequestError(400, f"a user name has at most {MAX_NAME_LENGTH} characters")
    return name, address
