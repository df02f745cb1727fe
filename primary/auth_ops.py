"""The control operations on accounts: login (the password is checked by the web worker, off this loop),
sessions and profiles. Failed logins, and login attempts per minute, are counted here per (name, address)
and per address, so the limits hold across web workers and nobody can lock out an account from elsewhere."""

from __future__ import annotations

from typing import Any

from cluster.logs import clip, get_logger
from cluster.passwords import new_token
from primary.accounts import AccountError, AccountStore
from primary.control import Handler, RequestError
from primary.job_ops import Caller
from primary.limits import LoginFailures, pair_key
from primary.rate_limits import RateLimits

log = get_logger()

# Checked when the name is unknown, so that a missing user costs the same time as a wrong password.
DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
MAX_NAME_LENGTH = 64  # the web worker refuses longer names before asking; this is the primary's own guard


class AuthOps:
    def __init__(self, accounts: AccountStore, limiter: LoginFailures, session_ttl_s: float,
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


def _name_and_address(args: dict[str, Any]) -> tuple[str, str]:
    name, address = args.get("username"), args.get("ip")
    if not isinstance(name, str) or not isinstance(address, str):
        raise RequestError(400, "username and ip must be strings")
    if len(name) > MAX_NAME_LENGTH:
        raise RequestError(400, f"a user name has at most {MAX_NAME_LENGTH} characters")
    return name, address
