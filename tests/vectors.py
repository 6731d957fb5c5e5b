"""Load the golden test vectors of ``spec/vectors/`` (notation: ``spec/vectors/README.md``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterrpc.cli.notation import from_notation
from clusterrpc.values import Limits

SPEC = Path(__file__).resolve().parent.parent / "spec"
CODEC_VECTORS = SPEC / "vectors" / "codecs"


@dataclass(frozen=True)
class CodecCase:
    codec: str
    name: str
    kind: str
    body: bytes
    direction: str
    method: str | None
    params: list[Any] | None
    value: Any
    code: int | None
    message: str | None
    error: str | None
    limits: Limits | None

    def __str__(self) -> str:
        return f"{self.codec}/{self.name}"


def codec_cases(codec: str) -> list[CodecCase]:
    """Every case in ``spec/vectors/codecs/<codec>/cases.json``."""
    folder = CODEC_VECTORS / codec
    raw = json.loads((folder / "cases.json").read_text(encoding="utf-8"))
    cases = []
    for entry in raw:
        limits = entry.get("limits")
        cases.append(
            CodecCase(
                codec=codec,
                name=entry["name"],
                kind=entry["kind"],
                body=(folder / entry["file"]).read_bytes(),
                direction=entry.get("direction", "both"),
                method=entry.get("method"),
                params=from_notation(entry["params"]) if "params" in entry else None,
                value=from_notation(entry["value"]) if "value" in entry else None,
                code=entry.get("code"),
                message=entry.get("message"),
                error=entry.get("error"),
                limits=Limits(**limits) if limits else None,
            )
        )
    return cases
