"""The sans-IO lifecycle: its transition table, each decider, and a hypothesis state machine
that interleaves outcomes, reports, timeouts and lost owners against a compare-and-set
model of the store."""

from __future__ import annotations

import attrs
import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from smsgw.lifecycle import (
    FINAL_STATES,
    IN_DOUBT_FAILED,
    OWNED_STATES,
    PREDECESSORS,
    STAT_ACCEPTED,
    STAT_NO_RETRY,
    STAT_RETRY_LIMIT,
    STAT_UNKNOWN,
    THROTTLE_DELAY_MS,
    TRANSITIONS,
    WAITING_STATES,
    Accepted,
    Event,
    EventKind,
    Failed,
    FailureKind,
    Policy,
    PushKind,
    PushState,
    Receipt,
    State,
    Transition,
    TransitionError,
    allowed,
    decide_in_doubt,
    decide_push_result,
    decide_report,
    decide_submit,
    decide_timeout,
    not_sent,
    outbox_kinds,
    requeue,
    submitting,
)

NOW = 1_700_000_000_000
POLICY = Policy(max_retries=2, gives_reports=True, report_timeout_s=60.0)


@attrs.frozen
class Row:
    """A message row as the deciders read it (what the store hands out)."""

    id: int = 1
    msgtype: int = 1
    state: State = State.QUEUED
    attempts: int = 0
    submitted_at_ms: int | None = None
    carrier_msgid: str | None = None
    next_attempt_at_ms: int | None = NOW


@attrs.frozen
class Part:
    carrier_msgid: str
    delivered: bool
    stat: str | None


@attrs.frozen
class Match:
    message: Row
    part: Part
    all_reported: bool
    all_delivered: bool
    failed_stat: str | None


# --------------------------------------------------------------------- the table


def test_final_states_have_no_way_out() -> None:
    for state in FINAL_STATES:
        assert TRANSITIONS[state] == frozenset()
        for target in State:
            assert not allowed(state, target)


def test_every_state_is_reachable_from_accepted_or_scheduled() -> None:
    seen = set(WAITING_STATES)
    frontier = list(WAITING_STATES)
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(State)


def test_predecessors_invert_the_table() -> None:
    for source, targets in TRANSITIONS.items():
        for target in State:
            assert (source in PREDECESSORS[target]) == (target in targets)


def test_only_owned_states_lead_to_submitting_or_from_it() -> None:
    assert PREDECESSORS[State.SUBMITTING] == {State.QUEUED}
    assert PREDECESSORS[State.QUEUED] == WAITING_STATES
    assert {State.QUEUED, State.SUBMITTING} == OWNED_STATES
    # A waiting row is never sent without a claim.
    assert not allowed(State.ACCEPTED, State.SUBMITTING)


@pytest.mark.parametrize(
    ("expected", "target"),
    [
        (State.DELIVERED, State.FAILED),
        (State.FAILED, State.ACCEPTED),
        (State.ACCEPTED, State.FAILED),
    ],
)
def test_a_transition_not_in_the_table_is_refused(expected: State, target: State) -> None:
    with pytest.raises(TransitionError):
        Transition(1, target, Event(EventKind.FINAL, NOW, 1), expected=expected)


def test_a_final_receipt_goes_with_a_final_state_only() -> None:
    step = Receipt(False, True, "ACCEPTD", 1, NOW)
    with pytest.raises(ValueError, match="final receipt"):
        Transition(1, State.FAILED, Event("final", NOW, 1), receipt=step)
    with pytest.raises(ValueError, match="outbox items"):
        Transition(1, State.SUBMITTED, Event("x", NOW, 1), pushes=(PushKind.STATUS_REPORT,))
    with pytest.raises(ValueError, match="both set and clear"):
        Transition(1, State.FAILED, Event("x", NOW, 1), error="e", clear_error=True)


# --------------------------------------------------------------------- submits


def test_submitting_counts_the_attempt_and_expects_the_claim() -> None:
    update = submitting(Row(attempts=1), NOW, owner="o1")
    assert (update.state, update.attempts, update.expected, update.owner) == (
        State.SUBMITTING,
        2,
        State.QUEUED,
        "o1",
    )
    assert update.event == Event(EventKind.SUBMITTING, NOW, 2)


def test_requeue_keeps_the_due_time() -> None:
    update = requeue(Row(next_attempt_at_ms=NOW - 5), NOW, owner="o1")
    assert (update.state, update.next_attempt_at_ms, update.expected) == (
        State.ACCEPTED,
        NOW - 5,
        State.QUEUED,
    )


def test_not_sent_restores_the_attempts_from_queued_or_submitting() -> None:
    row = Row(attempts=1, next_attempt_at_ms=NOW - 5)
    update = not_sent(row, NOW, owner="o1")
    assert (update.state, update.attempts, update.next_attempt_at_ms) == (
        State.ACCEPTED,
        1,
        NOW - 5,
    )
    # No expected state: the store checks the owner and that the move is allowed, which it
    # is from both states its SUBMITTING write may have left, and from no other.
    assert (update.expected, update.owner) == (None, "o1")
    assert {s for s in State if allowed(s, State.ACCEPTED)} == {State.QUEUED, State.SUBMITTING}


def decide(
    row: Row, attempt: int, outcome: Accepted | Failed, policy: Policy = POLICY
) -> Transition:
    return decide_submit(row, attempt, NOW - 10, NOW, outcome, policy, retry_delay_ms=500)


def test_accepted_with_reports_waits_for_them() -> None:
    update = decide(Row(state=State.SUBMITTING, attempts=1), 1, Accepted("c1", ("c1", "c2")))
    assert update.state is State.SUBMITTED
    assert (update.part_ids, update.submitted_at_ms, update.clear_error) == (
        ("c1", "c2"),
        NOW - 10,
        True,
    )
    assert update.receipt == Receipt(False, True, STAT_ACCEPTED, 1, NOW - 10, "c1")
    assert update.expected is State.SUBMITTING


def test_accepted_without_reports_is_final() -> None:
    policy = attrs.evolve(POLICY, gives_reports=False)
    update = decide(Row(attempts=1), 1, Accepted("c1", ()), policy)
    assert (update.state, update.stat, update.part_ids) == (State.DELIVERED, STAT_ACCEPTED, ("c1",))
    assert update.receipt is not None and update.receipt.final and update.receipt.success


def test_throttled_is_not_an_attempt() -> None:
    update = decide(Row(attempts=1), 2, Failed(FailureKind.THROTTLED, "THROTTLED", "slow down"))
    assert (update.state, update.attempts, update.next_attempt_at_ms) == (
        State.ACCEPTED,
        1,
        NOW + THROTTLE_DELAY_MS,
    )


def test_permanent_failure_is_final_with_the_operators_stat() -> None:
    update = decide(Row(), 1, Failed(FailureKind.PERMANENT, "REJECTD", "bad number"))
    assert (update.state, update.stat, update.error) == (State.FAILED, "REJECTD", "bad number")


@pytest.mark.parametrize("kind", [FailureKind.TEMPORARY, FailureKind.IN_DOUBT])
def test_a_notification_is_retried_until_its_attempts_run_out(kind: FailureKind) -> None:
    retried = decide(Row(), 1, Failed(kind, "ERR", "down"))
    assert (retried.state, retried.next_attempt_at_ms, retried.error) == (
        State.ACCEPTED,
        NOW + 500,
        "down",
    )
    last = decide(Row(), 1 + POLICY.max_retries, Failed(kind, "ERR", "down"))
    expected_stat = STAT_UNKNOWN if kind is FailureKind.IN_DOUBT else STAT_RETRY_LIMIT
    assert (last.state, last.stat, last.error) == (State.FAILED, expected_stat, "ERR: down")


@pytest.mark.parametrize(
    ("kind", "stat"), [(FailureKind.TEMPORARY, STAT_NO_RETRY), (FailureKind.IN_DOUBT, STAT_UNKNOWN)]
)
def test_a_verification_code_is_never_retried(kind: FailureKind, stat: str) -> None:
    update = decide(Row(msgtype=2), 1, Failed(kind, "ERR", "down"))
    assert (update.state, update.stat) == (State.FAILED, stat)


# --------------------------------------------------------------------- lost owners


def test_in_doubt_code_fails_unknown_and_is_never_resent() -> None:
    row = Row(msgtype=2, state=State.SUBMITTING, attempts=1, submitted_at_ms=NOW - 99)
    update = decide_in_doubt(row, NOW, POLICY, owner="heir")
    assert (update.state, update.stat, update.error, update.owner) == (
        State.FAILED,
        STAT_UNKNOWN,
        IN_DOUBT_FAILED,
        "heir",
    )
    assert update.event.kind == EventKind.RECOVERED
    assert update.receipt is not None and update.receipt.sendtime_ms == NOW - 99


def test_in_doubt_notification_is_sent_again_while_it_has_attempts() -> None:
    again = decide_in_doubt(Row(state=State.SUBMITTING, attempts=1), NOW, POLICY)
    assert (again.state, again.next_attempt_at_ms, again.expected) == (
        State.ACCEPTED,
        NOW,
        State.SUBMITTING,
    )
    spent = decide_in_doubt(Row(state=State.SUBMITTING, attempts=3), NOW, POLICY)
    assert (spent.state, spent.stat) == (State.FAILED, STAT_UNKNOWN)


# --------------------------------------------------------------------- reports


def report(
    *, all_reported: bool, all_delivered: bool, delivered: bool, failed: str | None = None
) -> Transition:
    row = Row(state=State.SUBMITTED, attempts=2, submitted_at_ms=NOW - 50)
    match = Match(
        row,
        Part("c2", delivered, "DELIVRD" if delivered else "UNDELIV"),
        all_reported,
        all_delivered,
        failed,
    )
    return decide_report(match, NOW, error="text")


def test_a_part_report_before_the_others_is_a_step() -> None:
    update = report(all_reported=False, all_delivered=False, delivered=True)
    assert (update.state, update.expected) == (State.SUBMITTED, State.SUBMITTED)
    assert update.receipt == Receipt(False, True, "DELIVRD", 2, NOW - 50, "c2", "text")


def test_the_last_report_decides_delivered_or_the_first_failure() -> None:
    delivered = report(all_reported=True, all_delivered=True, delivered=True)
    assert (delivered.state, delivered.stat, delivered.error) == (State.DELIVERED, "DELIVRD", None)
    failed = report(all_reported=True, all_delivered=False, delivered=True, failed="EXPIRED")
    assert (failed.state, failed.stat, failed.error) == (State.FAILED, "EXPIRED", None)
    failed_here = report(all_reported=True, all_delivered=False, delivered=False, failed="UNDELIV")
    assert (failed_here.stat, failed_here.error) == ("UNDELIV", "text")


def test_a_report_timeout_fails_unknown() -> None:
    row = Row(state=State.SUBMITTED, attempts=1, carrier_msgid="c9", submitted_at_ms=NOW - 70_000)
    update = decide_timeout(row, NOW, POLICY)
    assert (update.state, update.stat, update.expected) == (
        State.FAILED,
        STAT_UNKNOWN,
        State.SUBMITTED,
    )
    assert update.error == "no delivery report within 60 s"
    assert update.receipt is not None and update.receipt.carrier_msgid == "c9"


# --------------------------------------------------------------------- receipts and pushes


def test_outbox_kinds() -> None:
    final = Receipt(True, True, "DELIVRD", 1, NOW)
    step = attrs.evolve(final, final=False)
    assert outbox_kinds(final, status_reports=True) == (PushKind.RECEIPT, PushKind.STATUS_REPORT)
    assert outbox_kinds(final, status_reports=False) == (PushKind.RECEIPT,)
    assert outbox_kinds(step, status_reports=True) == (PushKind.STATUS_REPORT,)
    assert outbox_kinds(step, status_reports=False) == ()


def test_push_results() -> None:
    assert decide_push_result(1, True, 3) is PushState.DONE
    assert decide_push_result(2, False, 3) is PushState.PENDING
    assert decide_push_result(3, False, 3) is PushState.ABANDONED


# --------------------------------------------------------------------- the state machine

OWNERS = ("a", "b")
PARTS = ("p1", "p2")


@attrs.define
class ModelRow:
    """The row as a compare-and-set store keeps it."""

    msgtype: int
    state: State = State.ACCEPTED
    attempts: int = 0
    owner: str | None = None
    submitted_at_ms: int | None = None
    parts: dict[str, tuple[bool, str]] = attrs.Factory(dict)  # id → (delivered, stat) reported
    part_ids: tuple[str, ...] = ()

    def view(self) -> Row:
        return Row(1, self.msgtype, self.state, self.attempts, self.submitted_at_ms, None, NOW)


class LifecycleMachine(RuleBasedStateMachine):
    """Two owners, one message of two parts; decisions are made from snapshots and applied
    in any order later (as concurrent processes would), through compare-and-set."""

    def __init__(self) -> None:
        super().__init__()
        self.row = ModelRow(msgtype=1)
        self.claimed: dict[str, Row] = {}  # owner → its QUEUED snapshot
        self.sending: dict[str, tuple[Row, int]] = {}  # owner → (snapshot, attempt) in flight
        # decided, not yet applied; with the submit outcome it was decided from, if any
        self.pending: list[tuple[Transition, Accepted | Failed | None]] = []
        self.finals = 0
        self.reached_operator = 0  # sends of the message that may have reached the operator
        self.left_final = False

    @rule(msgtype=st.sampled_from([1, 2]))
    @precondition(lambda self: self.row.state is State.ACCEPTED and self.row.attempts == 0)
    def retype(self, msgtype: int) -> None:
        self.row.msgtype = msgtype

    def apply(self, update: Transition) -> bool:
        row = self.row
        if update.expected is not None and row.state is not update.expected:
            return False
        if not allowed(row.state, update.state):
            return False
        if update.owner is not None and row.owner != update.owner:
            return False
        was_final = row.state in FINAL_STATES
        row.state = update.state
        if update.attempts is not None:
            row.attempts = update.attempts
        if update.submitted_at_ms is not None:
            row.submitted_at_ms = update.submitted_at_ms
        if update.part_ids:
            row.part_ids, row.parts = update.part_ids, {}
        if update.state not in OWNED_STATES:
            row.owner = None
        if update.receipt is not None and update.receipt.final:
            self.finals += 1
        self.left_final |= was_final
        return True

    @rule(owner=st.sampled_from(OWNERS))
    @precondition(lambda self: self.row.state in WAITING_STATES)
    def claim(self, owner: str) -> None:
        self.row.state, self.row.owner = State.QUEUED, owner
        self.claimed[owner] = self.row.view()

    @rule(owner=st.sampled_from(OWNERS))
    def send(self, owner: str) -> None:
        view = self.claimed.pop(owner, None)
        if view is None:
            return
        update = submitting(view, NOW, owner=owner)
        if self.apply(update):
            assert update.attempts is not None
            self.sending[owner] = (self.row.view(), update.attempts)
            self.reached_operator += 1

    @rule(
        owner=st.sampled_from(OWNERS),
        outcome=st.sampled_from(
            [
                Accepted("p1", PARTS),
                Failed(FailureKind.TEMPORARY, "T", "t"),
                Failed(FailureKind.PERMANENT, "P", "p"),
                Failed(FailureKind.THROTTLED, "S", "s"),
                Failed(FailureKind.IN_DOUBT, "D", "d"),
            ]
        ),
        now=st.booleans(),
    )
    def outcome(self, owner: str, outcome: Accepted | Failed, now: bool) -> None:
        sent = self.sending.pop(owner, None)
        if sent is None:
            return
        view, attempt = sent
        update = decide_submit(
            view, attempt, NOW, NOW, outcome, POLICY, retry_delay_ms=0, owner=owner
        )
        if now:
            self.apply_outcome(update, outcome)
        else:
            self.pending.append((update, outcome))

    def apply_outcome(self, update: Transition, outcome: Accepted | Failed | None) -> None:
        if (
            self.apply(update)
            and isinstance(outcome, Failed)
            and outcome.kind is FailureKind.THROTTLED
        ):
            self.reached_operator -= 1  # the operator refused it: it never went out

    @rule(owner=st.sampled_from(OWNERS), heir=st.sampled_from(OWNERS))
    def lose_owner(self, owner: str, heir: str) -> None:
        """The owner's lease lapsed: another process reclaims its rows. The lost owner's
        snapshots stay (a process that only lost its lease may still try to use them)."""
        row = self.row
        if row.owner != owner or owner == heir:
            return
        if row.state is State.QUEUED:
            row.state, row.owner = State.ACCEPTED, None
        elif row.state is State.SUBMITTING:
            row.owner = heir
            self.pending.append((decide_in_doubt(row.view(), NOW, POLICY, owner=heir), None))

    @rule(part=st.sampled_from((*PARTS, "unknown")), delivered=st.booleans())
    def report(self, part: str, delivered: bool) -> None:
        """A report (early, late, repeated or for an unknown id) recorded by the store; the
        decision is taken from what the store returned, applied later."""
        row = self.row
        if part not in row.part_ids or part in row.parts:
            return  # unknown (kept by the store) or a duplicate: no decision
        row.parts[part] = (delivered, "DELIVRD" if delivered else "UNDELIV")
        if row.state is not State.SUBMITTED:
            return
        reported = [row.parts[p] for p in row.part_ids if p in row.parts]
        failed = [stat for ok, stat in reported if not ok]
        match = Match(
            row.view(),
            Part(part, delivered, row.parts[part][1]),
            len(reported) == len(row.part_ids),
            not failed and len(reported) == len(row.part_ids),
            failed[0] if failed else None,
        )
        self.pending.append((decide_report(match, NOW), None))

    @rule()
    @precondition(lambda self: self.row.state is State.SUBMITTED)
    def time_out(self) -> None:
        self.pending.append((decide_timeout(self.row.view(), NOW, POLICY), None))

    @rule(data=st.data())
    @precondition(lambda self: bool(self.pending))
    def apply_pending(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.pending) - 1))
        # A throttled outcome applied late un-counts its send all the same.
        self.apply_outcome(*self.pending.pop(index))

    @rule(owner=st.sampled_from(OWNERS))
    def stop(self, owner: str) -> None:
        view = self.claimed.pop(owner, None)
        if view is not None:
            self.apply(requeue(view, NOW, owner=owner))

    @invariant()
    def one_final_outcome(self) -> None:
        assert self.finals <= 1
        assert not self.left_final
        assert self.finals == (1 if self.row.state in FINAL_STATES else 0)

    @invariant()
    def a_code_reaches_the_operator_at_most_once(self) -> None:
        if self.row.msgtype == 2:
            assert self.reached_operator <= 1


LifecycleMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None
)
test_lifecycle_machine = LifecycleMachine.TestCase
