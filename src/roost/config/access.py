"""Who may do what: tokens, rooms, Origins, the API and admin secrets, backend hooks."""

from __future__ import annotations

from dataclasses import dataclass

from ..hooks import HookPolicy
from .option import default_of, opt


@dataclass(frozen=True)
class AccessOptions:
    secret: str = opt(
        "", "--secret", "ROOST_SECRET", "Signs and verifies tokens.", show_default=False
    )
    require_token: bool = opt(
        False,
        "--require-token",
        "ROOST_REQUIRE_TOKEN",
        "Refuse sockets without a valid token (HTTP 403).",
        is_flag=True,
    )
    rooms: str = opt(
        "",
        "--rooms",
        "ROOST_ROOMS",
        "Comma list of the only rooms that may be joined (default: any).",
        show_default=False,
    )
    private_rooms: str = opt(
        "",
        "--private-rooms",
        "ROOST_PRIVATE_ROOMS",
        "Comma list of room name patterns only users whose token lists them may join.",
        show_default=False,
    )
    allowed_origins: tuple[str, ...] = opt(
        (),
        "--allowed-origin",
        "ROOST_ALLOWED_ORIGINS",
        "Extra allowed Origin (scheme://host[:port], *.example.com, or * for any); "
        "repeatable. The request's own host is always allowed.",
        multiple=True,
        show_default=False,
    )
    api_key: str = opt(
        "",
        "--api-key",
        "ROOST_API_KEY",
        "Enables POST /api/broadcast for callers with this bearer key.",
        show_default=False,
    )
    admin_secret: str = opt(
        "",
        "--admin-secret",
        "ROOST_ADMIN_SECRET",
        "Enables the live dashboard at /admin (the admin:cluster channel) for holders of "
        "this secret (at least 16 printable ASCII characters). Unset: no /admin, no channel.",
        show_default=False,
    )
    hook_connect: str = opt(
        "",
        "--hook-connect",
        "ROOST_HOOK_CONNECT",
        "URL your backend answers: may this socket connect, with which assigns.",
        show_default=False,
    )
    hook_join: str = opt(
        "",
        "--hook-join",
        "ROOST_HOOK_JOIN",
        "URL your backend answers: may this user join this topic (payload/assigns rewrite).",
        show_default=False,
    )
    hook_publish: str = opt(
        "",
        "--hook-publish",
        "ROOST_HOOK_PUBLISH",
        "URL your backend answers: may this client push this event (payload rewrite).",
        show_default=False,
    )
    hook_secret: str = opt(
        "",
        "--hook-secret",
        "ROOST_HOOK_SECRET",
        "Signs every hook request (X-Roost-Signature); required with any hook.",
        show_default=False,
    )
    hook_timeout: float = opt(
        default_of(HookPolicy, "timeout"),
        "--hook-timeout",
        "ROOST_HOOK_TIMEOUT",
        "Seconds a hook request may take (per attempt).",
    )
    hook_retries: int = opt(
        default_of(HookPolicy, "retries"),
        "--hook-retries",
        "ROOST_HOOK_RETRIES",
        "Retries of a hook request that failed (timeout, connection, 5xx).",
        minimum=0,
    )
    hook_failure: str = opt(
        "closed",
        "--hook-failure",
        "ROOST_HOOK_FAILURE",
        "When the backend gives no answer: closed (deny: temporarily unavailable) or open (allow).",
        choices=("closed", "open"),
    )

    def check_access(self) -> None:
        if self.require_token and not self.secret:
            raise ValueError("--require-token needs a secret (--secret or ROOST_SECRET)")
        if self.admin_secret and not (
            len(self.admin_secret) >= 16
            and self.admin_secret.isascii()
            and self.admin_secret.isprintable()
        ):
            raise ValueError("--admin-secret must be at least 16 printable ASCII characters")
        if (self.hook_connect or self.hook_join or self.hook_publish) and not self.hook_secret:
            raise ValueError(
                "backend hooks need --hook-secret (ROOST_HOOK_SECRET): every hook request is "
                "signed with it so that your backend can trust it"
            )
