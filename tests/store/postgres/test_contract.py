"""The store tests that hold for any backend, run against PostgreSQL.

Each is imported from the SQLite store's test modules (they see only the `Store` protocol);
this directory's `store` fixture makes them run on a PostgresStore. Tests of SQLite's own
machinery (file paths, query plans, the writer gate) stay there; their PostgreSQL
counterparts are in this directory's other modules.
"""

from __future__ import annotations

from tests.store.test_sqlite_accept import (
    test_duplicate_across_calls_keeps_the_first,
    test_duplicate_across_concurrent_callers,
    test_duplicate_within_one_call,
    test_empty_insert_returns_empty_without_a_commit,
    test_history_filters_by_appid_and_unknown_msgid,
    test_insert_then_history_shows_rows,
    test_key_is_appid_msgid_phone,
    test_random_duplicates_match_a_model,
)
from tests.store.test_sqlite_inbound import (
    test_a_store_error_asks_for_the_batch_again_and_goes_on,
    test_inbound_limits_are_checked,
    test_inbound_messages_are_stored_and_listed_newest_first,
    test_mos_their_carrier_gave_up_on_are_not_stored,
    test_the_inbox_task_stores_everything_until_the_channel_closes,
)
from tests.store.test_sqlite_outbox import (
    test_apps_with_due_pushes_skips_apps_not_due,
    test_due_pushes_oldest_first_across_messages,
    test_failed_push_is_retried_then_abandoned,
    test_one_attempt_allowed_abandons_at_once,
    test_pushes_become_due_in_order,
    test_reclaim_keeps_pushes_pending,
    test_successful_push_is_done_and_late_results_are_ignored,
)
from tests.store.test_sqlite_pipeline import (
    test_all_parts_delivered,
    test_apply_is_all_or_nothing,
    test_apply_submitted_with_parts_and_pushes,
    test_carrier_msgid_alone_makes_one_part,
    test_claim_due_order_limit_and_schedule,
    test_claim_limit_edges,
    test_clear_error,
    test_final_state_and_unchanged_fields,
    test_fully_reported_returns_submitted_messages_whose_parts_all_reported,
    test_new_attempt_replaces_parts,
    test_next_due_at,
    test_overdue_submitted_finds_rows_waiting_too_long_for_a_report,
    test_part_match_carries_the_part_as_stored,
    test_part_reports_in_one_call_are_taken_in_order,
    test_recycled_operator_id_goes_to_the_waiting_part,
    test_retry_after,
    test_same_due_time_keeps_arrival_order,
    test_scheduled_rows_are_not_claimed_early,
    test_waiting_update_without_time_is_due_at_the_event,
)
from tests.store.test_sqlite_retention import (
    test_a_message_whose_push_is_pending_is_kept,
    test_old_inbound_messages_go,
)

__all__ = [
    "test_a_message_whose_push_is_pending_is_kept",
    "test_a_store_error_asks_for_the_batch_again_and_goes_on",
    "test_all_parts_delivered",
    "test_apply_is_all_or_nothing",
    "test_apply_submitted_with_parts_and_pushes",
    "test_apps_with_due_pushes_skips_apps_not_due",
    "test_carrier_msgid_alone_makes_one_part",
    "test_claim_due_order_limit_and_schedule",
    "test_claim_limit_edges",
    "test_clear_error",
    "test_due_pushes_oldest_first_across_messages",
    "test_duplicate_across_calls_keeps_the_first",
    "test_duplicate_across_concurrent_callers",
    "test_duplicate_within_one_call",
    "test_empty_insert_returns_empty_without_a_commit",
    "test_failed_push_is_retried_then_abandoned",
    "test_final_state_and_unchanged_fields",
    "test_fully_reported_returns_submitted_messages_whose_parts_all_reported",
    "test_history_filters_by_appid_and_unknown_msgid",
    "test_inbound_limits_are_checked",
    "test_inbound_messages_are_stored_and_listed_newest_first",
    "test_insert_then_history_shows_rows",
    "test_key_is_appid_msgid_phone",
    "test_mos_their_carrier_gave_up_on_are_not_stored",
    "test_new_attempt_replaces_parts",
    "test_next_due_at",
    "test_old_inbound_messages_go",
    "test_one_attempt_allowed_abandons_at_once",
    "test_overdue_submitted_finds_rows_waiting_too_long_for_a_report",
    "test_part_match_carries_the_part_as_stored",
    "test_part_reports_in_one_call_are_taken_in_order",
    "test_pushes_become_due_in_order",
    "test_random_duplicates_match_a_model",
    "test_reclaim_keeps_pushes_pending",
    "test_recycled_operator_id_goes_to_the_waiting_part",
    "test_retry_after",
    "test_same_due_time_keeps_arrival_order",
    "test_scheduled_rows_are_not_claimed_early",
    "test_successful_push_is_done_and_late_results_are_ignored",
    "test_the_inbox_task_stores_everything_until_the_channel_closes",
    "test_waiting_update_without_time_is_due_at_the_event",
]
