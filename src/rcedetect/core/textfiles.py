"""The one reader of JSON and TOML text: UTF-8 only, nesting at most :data:`MAX_DEPTH` deep, integers within 64 bits.

Every JSON file and TOML preset the package reads, a ``--set`` value and a JSON request body go through
:func:`loads_json` / :func:`loads_toml`, so a document nested 100,000 deep, a 5,000-digit integer or bytes that are
not UTF-8 are refused with one line (the caller's error class) before any value is used, and no later
``copy.deepcopy``, ``json.dumps`` or ``int`` → C conversion meets what it cannot handle.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError

#: the deepest nesting of lists and objects/tables any file of the package has (results.json: about 8)
MAX_DEPTH = 64
#: integers are stored in 64 bits wherever they are used (seeds, counts, torch); larger ones are refused
INT_LIMIT = 2**63
#: longest run of digits parsed as an integer (19 digits hold every 64-bit integer)
MAX_INT_DIGITS = 20


class TextError(ValueError):
    """What the readers raise; callers turn it into their own error class with :func:`loads_json`'s ``error``."""


def decode(data: bytes | str, where: str, error: type[Exception] = ConfigError) -> str:
    """``data`` as text; bytes that are not UTF-8 raise ``error`` naming ``where``."""
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r}); save it as "
                    "UTF-8") from e


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise TextError(f"an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    value = int(text)
    if not -INT_LIMIT < value < INT_LIMIT:
        raise TextError(f"an integer of {digits} digits; integers must lie within 64 bits (|n| < 2**63)")
    return value


#: a JSON string (no raw newline or quote inside; escapes kept whole): removed before brackets are counted
_JSON_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')


def json_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON text, outside strings (a linear scan in C: regex and numpy)."""
    import numpy as np

    codes = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8", "replace"), dtype=np.uint8)
    step = (codes == ord("[")).astype(np.int64) + (codes == ord("{"))
    step -= (codes == ord("]")).astype(np.int64) + (codes == ord("}"))
    return int(np.cumsum(step).max(initial=0))


def check_tree(obj: Any, where: str, error: type[Exception] = ConfigError) -> Any:
    """``obj`` unchanged when its lists and dicts nest at most :data:`MAX_DEPTH` deep and each integer lies in
    (−2**63, 2**63); else ``error`` naming ``where`` (an explicit stack: no recursion of its own)."""
    stack = [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, bool):
            continue
        if isinstance(node, int):
            if not -INT_LIMIT < node < INT_LIMIT:
                digits = len(str(abs(node))) if node.bit_length() < 10000 else "thousands of"
                raise error(f"{where} holds an integer of {digits} digits; integers must lie within 64 bits "
                            f"(|n| < 2**63)")
            continue
        if isinstance(node, (dict, list)):
            if depth >= MAX_DEPTH:
                raise error(f"{where} is nested more than {MAX_DEPTH} levels deep")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return obj


def loads_json(data: bytes | str, where: str, error: type[Exception] = ConfigError) -> Any:
    """Parse JSON text (NaN and ±Infinity allowed, as :func:`rcedetect.core.io.write_json` writes them) within the
    limits of this module; anything else raises ``error`` with one line naming ``where``."""
    text = decode(data, where, error)
    if json_depth(text) > MAX_DEPTH:  # before the parser recurses
        raise error(f"{where} is nested more than {MAX_DEPTH} levels deep")
    try:
        obj = json.loads(text, parse_int=_parse_int)
    except RecursionError as e:
        raise error(f"{where} is nested more than {MAX_DEPTH} levels deep") from e
    except TextError as e:
        raise error(f"{where} holds {e}") from e
    except json.JSONDecodeError as e:
        raise error(f"{where} is not valid JSON (truncated or corrupted?): {e}") from e
    except ValueError as e:  # a number Python will not convert
        raise error(f"{where} is not valid JSON: {e}") from e
    return obj  # its depth and integers are checked above: no walk over every value


def loads_toml(data: bytes | str, where: str, error: type[Exception] = ConfigError) -> dict:
    """Parse TOML text within the limits of this module; anything else raises ``error`` naming ``where``."""
    text = decode(data, where, error)
    try:
        obj = tomllib.loads(text)
    except RecursionError as e:
        raise error(f"{where} is nested more than {MAX_DEPTH} levels deep") from e
    except tomllib.TOMLDecodeError as e:
        raise error(f"{where} is not valid TOML: {e}") from e
    except (ValueError, OverflowError) as e:  # e.g. an integer past Python's digit limit
        raise error(f"{where} is not valid TOML: {e}") from e
    return check_tree(obj, where, error)


def is_toml_error(e: BaseException) -> bool:
    """True for what :func:`loads_toml` raises on text that is not TOML (not on the limits)."""
    return isinstance(e.__cause__, tomllib.TOMLDecodeError)
