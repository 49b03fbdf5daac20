"""Which certificates an upstream TLS connection trusts: LiteLLM's `ssl_verify` and its environment variables.

A setting is `True` (verify against the system's CAs, or the bundle named by env `SSL_CERT_FILE`), `False` (do not
verify: only for an upstream on a trusted network) or the path of a CA bundle (a PEM file, or a directory of hashed
certificates) that replaces the system's CAs. The names and the order are LiteLLM's
(docs.litellm.ai/docs/guides/security_settings; `get_ssl_verify` in LiteLLM's `http_handler.py`): a deployment's
`litellm_params.ssl_verify` wins over env `SSL_VERIFY`, which wins over `litellm_settings.ssl_verify`, which wins over
the default (`True`); `SSL_CERT_FILE` applies wherever the result is `True`.

Invariant: one `SSLContext` per distinct setting, built on first use (loading a bundle reads files) and shared by
every connection that uses it, so the hot path only looks it up.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path

Verify = bool | str

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def parse_verify(value: bool | str | None) -> Verify | None:
    """A setting as written (`"False"` from an environment variable, a path, a bool) as a bool or a path."""
    if value is None or isinstance(value, bool):
        return value
    text = value.strip()
    if not text:
        return None
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    return text


class TrustStore:
    """The TLS contexts of upstream connections, one per `ssl_verify` setting in use."""

    def __init__(self, environ: Mapping[str, str] | None = None, *, setting: bool | str | None = None) -> None:
        """Read `SSL_VERIFY` and `SSL_CERT_FILE` from `environ` (default: the process environment); `setting` is
        `litellm_settings.ssl_verify`, used where the environment has no `SSL_VERIFY`."""
        env = os.environ if environ is None else environ
        default = parse_verify(env.get("SSL_VERIFY"))
        if default is None:
            default = parse_verify(setting)
        self.default: Verify = True if default is None else default
        self.cert_file = env.get("SSL_CERT_FILE") or None
        self._contexts: dict[Verify, ssl.SSLContext] = {}

    def context(self, verify: Verify | None = None) -> ssl.SSLContext:
        """The context for a deployment's setting (`None`: the default, from the environment or the settings).

        Raises:
            ssl.SSLError, OSError: the CA bundle cannot be read (the message names it).
        """
        key = self.default if verify is None else verify
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = self._build(key)
        return context

    def _build(self, verify: Verify) -> ssl.SSLContext:
        if verify is False:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        bundle = self.cert_file if verify is True else verify
        if bundle is None:
            return ssl.create_default_context()
        try:
            if Path(bundle).is_dir():
                return ssl.create_default_context(capath=bundle)
            return ssl.create_default_context(cafile=bundle)
        except (OSError, ssl.SSLError) as exc:
            raise OSError(f"cannot load the CA bundle {bundle}: {exc.strerror or exc}") from None
