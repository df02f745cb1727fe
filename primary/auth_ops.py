"""The control operations on accounts: login (the password is checked by the web worker, off this loop),
sessions and profiles. Failed logins, and login attempts per minute, are counted here, so the limits hold
across web workers."""

from __future__ import annotations

from typing import Any

from cluster.logs import get_logger
from cluster.passwords import new_token
from primary.accounts import AccountError, AccountStore
from primary.control import Handler, RequestError
from primary.job_ops import Caller
from primary.limits import FailureLimiter
from primary.rate_limits import RateLimits

log = get_logger()

# Checked when the name is unknown, so that a missing user costs the same time as a wrong password.
DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


class AuthOps:
    def __init__(self, accounts: AccountStore, limiter: FailureLimiter, session_ttl_s: float,
                 rates: RateLimits | None = None) -> None:
        self._accounts = accounts
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
        }

    def login_check(self, args: dict[str, Any]) -> dict[str, Any]:
        keys = _limit_keys(args)
        retry_after = self._limiter.retry_after_s(*keys) or self._rates.take("login", *keys)
        if retry_after > 0:
            return {"allowed": False, "retryAfter": retry_after}
        user = self._accounts.user_by_name(str(args.get("username", "")))
        if user is None:
            return {"allowed": True, "userId": None, "passwordHash": DUMMY_HASH}
        return {"allowed": True, "userId": user.id, "passwordHash": user.password_hash}

    def login_done(self, args: dict[str, Any]) -> dict[str, Any]:
        keys = _limit_keys(args)
        user = self._accounts.user_by_id(str(args.get("userId") or ""))
        if not args.get("ok") or user is None:
            self._limiter.fail(*keys)
            log.warning("login failed", username=args.get("username"), ip=args.get("ip"))
            raise RequestError(401, "wrong user name or password")
        self._limiter.succeed(keys[0])
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
        self._accounts.end_session(str(args.get("token", "")))
        return {"loggedOut": True}

    def update_user(self, args: dict[str, Any]) -> dict[str, Any]:
        caller = Caller(args)
        try:
            if args.get("name"):
                self._accounts.rename(caller.user_id, str(args["name"]))
            if args.get("passwordHash"):
                self._accounts.set_password_hash(caller.user_id, str(args["passwordHash"]))
        except AccountError as e:
            raise RequestError(400, str(e)) from e
        user = self._accounts.user_by_id(caller.user_id)
        if user is None:
            raise RequestError(401, "no such user")
        return user.public()


def _limit_keys(args: dict[str, Any]) -> tuple[str, str]:
    return f"user:{args.get('username', '')}", f"ip:{args.get('ip', '')}"
