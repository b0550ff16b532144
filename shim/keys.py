"""Who may use the shim, and which AI/ML key pays for each request."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers

from shim import errors
from shim.config import Config

__all__ = ["CATALOG_PATHS", "Keys", "bearer_token"]

#: The catalogue GETs: static lists of models and voices. Unless ``private_catalog``,
#: they answer without a client key: they reveal nothing, and front ends such as Open
#: WebUI read ``/v1/audio/voices`` and ``/v1/audio/models`` without one.
CATALOG_PATHS = ("/v1/models", "/v1/audio/voices", "/v1/audio/models")


def bearer_token(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class Keys:
    """Client authentication and the choice of upstream key.

    With ``client_keys`` set, clients must present one of them (compared in constant
    time). The upstream key is the server-side ``AIMLAPI_KEY`` when set; else, with
    ``upstream_key_header``, the value of that header (the client's own AI/ML key, its
    bearer token being a shim key); otherwise the client's own bearer token is passed
    through, so ``OPENAI_API_KEY=<AI/ML key>`` works with no shim configuration at all.
    A shim key is never passed through: with client keys and neither of the first two,
    every paid call is refused (``Config.check_keys`` refuses that set-up at start-up).
    """

    def __init__(self, config: Config) -> None:
        self._client_keys = tuple(k.encode() for k in config.client_keys)
        self._server_key = config.upstream_key
        self._key_header = config.upstream_key_header
        self._private_catalog = config.private_catalog

    @property
    def required(self) -> bool:
        return bool(self._client_keys)

    def guards(self, method: str, path: str) -> bool:
        """Whether ``path`` is guarded when any client keys exist (from the environment
        or a keys file)."""
        if not path.startswith("/v1/"):
            return False
        if self._private_catalog or method not in ("GET", "HEAD"):
            return True
        return not (path in CATALOG_PATHS or path.startswith("/v1/models/"))

    def check_client(self, headers: Headers) -> None:
        if not self._client_keys:
            return
        token = (bearer_token(headers) or "").encode()
        # Compare with every key, so timing says nothing about which one nearly matched.
        matched = False
        for key in self._client_keys:
            matched |= hmac.compare_digest(token, key)
        if not matched:
            raise errors.invalid_api_key(
                "Incorrect or missing API key for this shim. Send one of the keys in "
                "TTS_SHIM_API_KEYS as the bearer token."
            )

    def upstream_key(self, headers: Headers) -> str:
        if self._server_key:
            return self._server_key
        if self._key_header is not None:
            return self._from_key_header(headers, self._key_header)
        if self._client_keys:
            raise errors.internal_error(
                "This tts-shim has client keys but no AI/ML key to pay with; its operator "
                "must set AIMLAPI_KEY or --upstream-key-header."
            )
        key = bearer_token(headers)
        if not key:
            raise errors.invalid_api_key(
                "You didn't provide an API key. Send your AI/ML API key as the bearer token "
                "(OPENAI_API_KEY for the OpenAI SDK), or start the shim with AIMLAPI_KEY set."
            )
        return key

    @staticmethod
    def _from_key_header(headers: Headers, name: str) -> str:
        value = headers.get(name, "").strip()
        scheme, _, rest = value.partition(" ")
        if scheme.lower() == "bearer":  # tolerated: some clients add it out of habit
            value = rest.strip()
        if not value:
            raise errors.invalid_api_key(
                f"You didn't provide an AI/ML API key. This shim takes it in the {name} "
                "header (your shim key goes in Authorization as the bearer token)."
            )
        return value
