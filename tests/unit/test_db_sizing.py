"""The embedded server's settings follow the machine it runs on (issue 22)."""

from __future__ import annotations

from jukilib.db.embedded import setting_literal
from jukilib.db.sizing import GB, MB, PRELOADED, server_settings


def test_a_dedicated_server_caches_a_quarter_of_memory_and_plans_for_three_quarters() -> None:
    settings = server_settings(24 * GB, 2)
    assert settings["shared_buffers"] == "6GB"
    assert settings["effective_cache_size"] == "18GB"
    assert settings["maintenance_work_mem"] == "1536MB"


def test_sizes_are_written_as_postgresql_shows_them() -> None:
    # apply_settings restarts when a start-only setting differs from current_setting's text: "6GB", not "6144MB".
    assert server_settings(24 * GB, 2)["shared_buffers"] == "6GB"
    assert server_settings(23 * GB + 600 * MB, 2)["shared_buffers"] == "6038MB"


def test_a_small_machine_keeps_postgresql_minimums() -> None:
    settings = server_settings(256 * MB, 1)
    assert settings["shared_buffers"] == "128MB"
    assert settings["maintenance_work_mem"] == "64MB"
    assert settings["max_parallel_maintenance_workers"] == "1"


def test_index_builds_get_at_most_two_gigabytes_and_parallel_workers_follow_the_cores() -> None:
    settings = server_settings(256 * GB, 16)
    assert settings["maintenance_work_mem"] == "2GB"
    assert settings["max_parallel_maintenance_workers"] == "8"
    assert int(settings["max_worker_processes"]) >= 8 + 8


def test_a_list_setting_is_set_as_separate_literals_so_that_the_server_starts() -> None:
    # One literal 'a, b' would make PostgreSQL look for a library named "a, b" and refuse to start.
    assert setting_literal("shared_preload_libraries", PRELOADED) == "'pg_prewarm', 'pg_stat_statements'"
    assert setting_literal("log_line_prefix", "%m [%p] it's, here") == "'%m [%p] it''s, here'"
