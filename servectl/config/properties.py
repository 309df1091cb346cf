"""Java properties files, read as Java reads them and written so that Java, and TorchServe's
own Python launcher, read back the same strings."""

from __future__ import annotations

from pathlib import Path

from jproperties import Properties


def read_properties(path: Path) -> dict[str, str]:
    r"""The properties Java's ``Properties.load`` sees in ``path``: escapes resolved (the file's
    ``\\.mar`` is the regex ``\.mar``), continuation lines joined, ``=``, ``:`` or blank
    separators, ``#`` and ``!`` comments; ISO-8859-1 with ``\uXXXX`` escapes, as Java reads it."""
    props = Properties()
    props.load(path.read_bytes(), encoding="iso-8859-1")
    return {key: value.data for key, value in props.items()}


def write_properties(path: Path, props: dict[str, str]) -> None:
    """Write ``props`` so that Java's ``Properties.load`` reads back exactly these strings.

    Hand-written because jproperties' ``store`` escapes ``=`` and ``:`` in values, and
    TorchServe's own launcher (``ts.model_server.load_properties``: split at the first ``=``,
    no unescaping) hands ``vmargs`` to the JVM verbatim, so ``-Dx\\=2`` would reach Java. Values
    escape only what Java needs (backslash, line breaks, a leading blank); the file is ASCII
    (``\\uXXXX`` beyond), which both readers decode alike."""
    lines = (f"{_escape(key, _KEY_ESCAPES)}={_escape(value, _VALUE_ESCAPES)}\n" for key, value in props.items())
    path.write_text("".join(lines), encoding="ascii")


_VALUE_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\f": "\\f"})
_KEY_ESCAPES = str.maketrans(
    {**{ord(c): "\\" + c for c in "\\ =:#!"}, ord("\n"): "\\n", ord("\r"): "\\r", ord("\f"): "\\f", ord("\t"): "\\t"}
)


def _escape(text: str, table: dict[int, str]) -> str:
    """``text`` with ``table``'s escapes, a leading blank kept (Java skips blanks before a
    value), and ``\\uXXXX`` (UTF-16 units) for every non-ASCII character."""
    escaped = text.translate(table)
    if escaped[:1] == " ":
        escaped = "\\" + escaped
    elif escaped[:1] == "\t":
        escaped = "\\t" + escaped[1:]
    return "".join(char if ord(char) < 128 else _utf16_escape(char) for char in escaped)


def _utf16_escape(char: str) -> str:
    units = char.encode("utf-16-be")
    return "".join(f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2))
