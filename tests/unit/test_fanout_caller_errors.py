"""raise_caller_errors: which shard failures are the caller's (passed on with their own code, the shard named
and any retry pushback kept) and which are left to require_coverage (a shard missing, a placement behind)."""
from __future__ import annotations

import grpc
import pytest

from quiver.errors import (
    ERRORS_BY_CODE,
    STALE_TERM_REFUSAL,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PartitionMissing,
    ResourceExhausted,
    Unavailable,
)
from router.fanout import Outcome, raise_caller_errors, require_coverage

OK: Outcome[str] = Outcome(0, value="ok")


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
    ],
)
def test_a_callers_mistake_on_one_shard_is_raised_with_its_own_code_and_the_shard_named(code, error_type) -> None:
    outcomes = [OK, Outcome(1, code=code, message="dimension 3, expected 4")]
    with pytest.raises(error_type, match=r"^shard 1: dimension 3, expected 4$") as raised:
        raise_caller_errors(outcomes)
    assert type(raised.value) is ERRORS_BY_CODE[code]
    assert raised.value.code == code


def test_an_overloaded_shards_retry_pushback_reaches_the_caller() -> None:
    outcomes = [Outcome(0, code=grpc.StatusCode.RESOURCE_EXHAUSTED, message="write queue full", retry_after_s=0.25)]
    with pytest.raises(ResourceExhausted, match="shard 0: write queue full") as raised:
        raise_caller_errors(outcomes)
    assert raised.value.retry_after_s == 0.25


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL])
def test_a_shard_that_did_not_answer_is_not_the_callers_error(code) -> None:
    outcomes = [OK, Outcome(1, code=code, message="gone")]
    raise_caller_errors(outcomes)  # nothing: coverage decides
    with pytest.raises(Unavailable, match="1 of 2 shards did not answer"):
        require_coverage(outcomes, False, "search")


@pytest.mark.parametrize(
    ("code", "refusal"),
    [(grpc.StatusCode.FAILED_PRECONDITION, STALE_TERM_REFUSAL), (grpc.StatusCode.NOT_FOUND, PartitionMissing.refusal)],
)
def test_a_refusal_marked_as_stale_placement_becomes_a_retryable_unavailable_not_the_callers_error(code, refusal) -> None:
    outcomes = [OK, Outcome(1, code=code, message="term 3 has begun", refusal=refusal)]
    raise_caller_errors(outcomes)
    with pytest.raises(Unavailable, match="shard map was behind the cluster's") as raised:
        require_coverage(outcomes, False, "upsert")
    assert raised.value.retry_now


def test_the_same_code_unmarked_is_the_callers_error() -> None:
    with pytest.raises(FailedPrecondition, match="model mismatch"):
        raise_caller_errors([Outcome(0, code=grpc.StatusCode.FAILED_PRECONDITION, message="model mismatch", refusal="sealed-for-another-reason")])


def test_a_stale_placement_on_one_shard_does_not_hide_a_callers_error_on_another() -> None:
    outcomes = [
        Outcome(0, code=grpc.StatusCode.FAILED_PRECONDITION, message="term 3 has begun", refusal=STALE_TERM_REFUSAL),
        Outcome(1, code=grpc.StatusCode.INVALID_ARGUMENT, message="NaN in vector 7"),
    ]
    with pytest.raises(InvalidArgument, match="shard 1: NaN in vector 7"):
        raise_caller_errors(outcomes)
