"""Invitations: a reviewer (or the admin) is a row with the sha256 of a random token; the link
carries the token once, the server keeps only its hash. Inviting a name again issues a new token
(the old link stops working; the reviewer's judgements stay theirs)."""

from __future__ import annotations

import hashlib
import secrets
import time
from urllib.parse import urlencode

from sqlalchemy import Engine, select

from .database import reviewers, upsert, writing

ROLES = ("reviewer", "admin")
ADMIN = "admin"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invite(engine: Engine, study_id: int, name: str, role: str = "reviewer") -> str:
    """A new token for `name` in the study (creating the reviewer); returns the token."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}; roles are {ROLES}")
    token = secrets.token_urlsafe(32)
    row = {
        "study_id": study_id,
        "name": name,
        "role": role,
        "token_hash": token_hash(token),
        "created": time.time(),
    }
    with writing(engine).begin() as conn:
        conn.execute(upsert(engine, reviewers, ["study_id", "name", "role"]).values(**row))
    return token


def link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/join?{urlencode({'token': token})}"


def who(engine: Engine, study_id: int, token: str | None):
    """The reviewer row a token belongs to in this study, or None (a missing or unknown token)."""
    if not token:
        return None
    with engine.connect() as conn:
        return conn.execute(
            select(reviewers).where(
                reviewers.c.study_id == study_id, reviewers.c.token_hash == token_hash(token)
            )
        ).first()
