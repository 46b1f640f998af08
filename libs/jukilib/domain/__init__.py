"""Pure-Python domain rules of juki: identifier check digits, municipality table, dates, text, sex codes.

Nothing in this package performs I/O beyond reading its own packaged data files.
Sources are cited per rule; see docs/domain.md for the evidence behind each one.
"""

from __future__ import annotations
