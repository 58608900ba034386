"""Pure parsers for every paper source: bytes in, `PaperRecord`s out, no I/O.

`parse_input(name, data, as_of)` detects the format of one input and returns a
`ParseResult`; a whole input that cannot be read raises `InputError`.
"""

from digest.sources.detect import parse_input
from digest.sources.records import InputError, PaperRecord, ParseResult

__all__ = ["InputError", "PaperRecord", "ParseResult", "parse_input"]
