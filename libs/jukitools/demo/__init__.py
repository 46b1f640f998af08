"""Synthetic demonstration data for juki. Nothing here is, or is derived from, real personal data."""

from __future__ import annotations
