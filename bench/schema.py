"""The results file's JSON Schema (bench/schema.json), checked with ``jsonschema``.

The runner validates every document before writing it, and ``compare`` and ``report``
validate what they read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parent / "schema.json"


class SchemaError(ValueError):
    """A document that does not follow the schema; the message lists every violation."""


def load_schema() -> Dict:
    return json.loads(SCHEMA_PATH.read_text())


def validate(doc: object, schema: Dict | None = None) -> List[str]:
    """Every violation of ``schema`` (schema.json by default) in ``doc``, as "path: problem"."""
    validator = jsonschema.Draft202012Validator(load_schema() if schema is None else schema)
    return [f"{error.json_path}: {error.message}" for error in
            sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def check(doc: object) -> None:
    """Raises SchemaError unless ``doc`` follows schema.json."""
    errors = validate(doc)
    if errors:
        raise SchemaError("results document does not follow bench/schema.json:\n  " + "\n  ".join(errors[:20]))


def _finite(value: object) -> object:
    """NaN and infinities as null: JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(doc: Dict) -> str:
    """The document as JSON text, one row per line (smaller, and a diff shows which rows changed)."""
    doc = _finite(doc)
    head = json.dumps({k: v for k, v in doc.items() if k != "rows"}, indent=1, allow_nan=False)
    rows = ",\n".join("  " + json.dumps(row, allow_nan=False) for row in doc.get("rows", []))
    return head[:-2] + ',\n "rows": [' + (f"\n{rows}\n ]" if rows else "]") + "\n}\n"


def load(path: Path | str) -> Dict:
    """A results document, checked against the schema."""
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or doc.get("schema") != "fastconv-bench/1":
        raise SchemaError(f"{path} is not a fastconv-bench/1 results file (its \"schema\" is "
                          f"{doc.get('schema') if isinstance(doc, dict) else None!r})")
    check(doc)
    return doc
