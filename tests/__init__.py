"""juki's tests. This package is imported before `conftest.py`, which imports grpc: jukilib must come first,
so that the test process runs with gRPC's fork support off as every juki process does (`jukilib/__init__.py`;
the initial load's workers are forked from a process whose gRPC threads are running)."""

import jukilib  # noqa: F401
