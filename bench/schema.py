"""The results file's JSON Schema (bench/schema.json), and a validator for it.

The validator implements the part of JSON Schema (draft 2020-12) that schema.json uses and
refuses any other keyword, so the schema cannot silently outgrow it. The runner validates
every document before writing it, and ``compare`` and ``report`` validate what they read.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Dict, List

SCHEMA_PATH = Path(__file__).resolve().parent / "schema.json"

_ANNOTATIONS = {"$schema", "$id", "$comment", "title", "description", "examples", "$defs"}
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


class SchemaError(ValueError):
    """A document that does not follow the schema; the message lists every violation."""


def load_schema() -> Dict:
    return json.loads(SCHEMA_PATH.read_text())


def validate(doc: object, schema: Dict | None = None) -> List[str]:
    """Every violation of ``schema`` (schema.json by default) in ``doc``, as "path: problem"."""
    root = load_schema() if schema is None else schema
    errors: List[str] = []
    _check(doc, root, root, "$", errors)
    return errors


def check(doc: object) -> None:
    """Raises SchemaError unless ``doc`` follows schema.json."""
    errors = validate(doc)
    if errors:
        raise SchemaError("results document does not follow bench/schema.json:\n  " + "\n  ".join(errors[:20]))


def _resolve(ref: str, root: Dict) -> Dict:
    if not ref.startswith("#/"):
        raise SchemaError(f"only local $ref are supported, got {ref!r}")
    node = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _check(value: object, schema: Dict, root: Dict, path: str, errors: List[str]) -> None:
    for key, rule in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key == "$ref":
            _check(value, _resolve(rule, root), root, path, errors)
        elif key == "type":
            types = rule if isinstance(rule, list) else [rule]
            if not any(_TYPES[t](value) for t in types):
                errors.append(f"{path}: expected {' or '.join(types)}, got {type(value).__name__} {value!r:.60}")
                return
        elif key == "enum":
            if value not in rule:
                errors.append(f"{path}: {value!r} is not one of {rule}")
        elif key == "const":
            if value != rule:
                errors.append(f"{path}: expected {rule!r}, got {value!r}")
        elif key == "pattern":
            if isinstance(value, str) and not re.search(rule, value):
                errors.append(f"{path}: {value!r} does not match {rule!r}")
        elif key == "minimum":
            if _TYPES["number"](value) and value < rule:
                errors.append(f"{path}: {value} is below {rule}")
        elif key == "exclusiveMinimum":
            if _TYPES["number"](value) and value <= rule:
                errors.append(f"{path}: {value} is not above {rule}")
        elif key == "minItems":
            if isinstance(value, list) and len(value) < rule:
                errors.append(f"{path}: fewer than {rule} items")
        elif key == "items":
            if isinstance(value, list):
                for i, item in enumerate(value):
                    _check(item, rule, root, f"{path}[{i}]", errors)
        elif key == "required":
            if isinstance(value, dict):
                errors += [f"{path}: missing {name!r}" for name in rule if name not in value]
        elif key == "properties":
            if isinstance(value, dict):
                for name, sub in rule.items():
                    if name in value:
                        _check(value[name], sub, root, f"{path}.{name}", errors)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                extra = [k for k in value if k not in schema.get("properties", {})]
                for name in extra:
                    if rule is False:
                        errors.append(f"{path}: unexpected property {name!r}")
                    elif isinstance(rule, dict):
                        _check(value[name], rule, root, f"{path}.{name}", errors)
        else:
            raise SchemaError(f"bench/schema.py does not implement the JSON Schema keyword {key!r} ({path})")


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
