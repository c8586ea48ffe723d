"""Bearer tokens with scopes (read, write, admin) for the API.

Tokens come from ``THAW_API_TOKENS`` and/or a tokens file (``--tokens FILE``): entries
``TOKEN=scope,scope`` separated by whitespace or ';' (in a file, one a line, '#' starts a
comment). ``admin`` grants every scope. Without any token the API is open, and ``thaw serve``
then listens on loopback only.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from fastapi import HTTPException, Request

from thaw.errors import ThawError

SCOPES = ("read", "write", "admin")
ENV = "THAW_API_TOKENS"
MIN_TOKEN = 16


def parse_tokens(text: str, source: str = ENV) -> dict[str, frozenset[str]]:
    tokens: dict[str, frozenset[str]] = {}
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    for entry in " ".join(lines).replace(";", " ").split():
        token, sep, scopes = entry.partition("=")
        wanted = frozenset(s.strip() for s in scopes.split(",") if s.strip())
        if not sep or not wanted:
            raise ThawError(f"{source}: each token needs its scopes, as TOKEN=read,write (got '{entry[:4]}...')")
        unknown = wanted - set(SCOPES)
        if unknown:
            raise ThawError(f"{source}: unknown scope(s) {', '.join(sorted(unknown))}; scopes are {', '.join(SCOPES)}")
        if len(token) < MIN_TOKEN:
            raise ThawError(f"{source}: a token must have at least {MIN_TOKEN} characters")
        tokens[token] = wanted
    return tokens


def load_tokens(file: str | Path | None = None, env: Mapping[str, str] = os.environ) -> dict[str, frozenset[str]]:
    """The tokens of ``THAW_API_TOKENS`` and of ``file`` together (empty: no authentication)."""
    tokens = parse_tokens(env.get(ENV, ""))
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ThawError(f"{path}: no such tokens file")
        tokens |= parse_tokens(path.read_text(), str(path))
    return tokens


class Auth:
    """``need(scope)`` is a FastAPI dependency: 401 without a known bearer token, 403 when
    the token lacks the scope; nothing is checked when there are no tokens at all."""

    def __init__(self, tokens: Mapping[str, frozenset[str]]) -> None:
        self.tokens = dict(tokens)

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    def scopes_of(self, header: str | None) -> frozenset[str] | None:
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return None
        found = None
        for token, scopes in self.tokens.items():  # every comparison in constant time
            if hmac.compare_digest(token.encode(), given.strip().encode()):
                found = scopes
        return found

    def need(self, scope: str) -> Callable[[Request], None]:
        def check(request: Request) -> None:
            if not self.tokens:
                return
            scopes = self.scopes_of(request.headers.get("authorization"))
            if scopes is None:
                raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
            if scope not in scopes and "admin" not in scopes:
                raise HTTPException(403, f"this token lacks the '{scope}' scope")
        return check
