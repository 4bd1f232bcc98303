"""Signatures: short, stable hashes of the configuration that determines a result.

Key order never changes a signature; any value change does. Inputs' signatures are folded in,
so a downstream result changes whenever an upstream one does (as dora's experiment signatures).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def _plain(obj: Any) -> Any:
    """Plain JSON-able containers, converting DictConfig/ListConfig at any depth."""
    if isinstance(obj, (DictConfig, ListConfig)):
        obj = OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def canonical_json(obj: Any) -> str:
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), default=str)


def signature(*parts: Any, length: int = 10) -> str:
    """Hash any number of JSON-able parts (dicts, lists, DictConfigs, other signatures)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(canonical_json(part).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:length]
