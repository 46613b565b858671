"""The commit's "enough written" check and ``--append --dedup exact``: a generation whose every record the dataset
already holds is committed empty (its inputs recorded as consumed); anything else that writes nothing is refused."""

from __future__ import annotations

import pytest

from seqpack.pipeline.commit_checks import TooFewWritten, check_enough_written
from seqpack.schemas.stats import empty_stats
from seqpack.transforms.dedup import DROPPED_REASON


def all_dropped(reason: str, count: int = 20) -> dict:
    stats = empty_stats()
    stats.update(records_read=count, examples_dropped=count, dropped_by_reason={reason: count})
    return stats


def test_an_append_of_only_known_records_is_committed_empty() -> None:
    check_enough_written(all_dropped(DROPPED_REASON), 0.5, "unused", appending=True)


@pytest.mark.parametrize(("reason", "appending"), [(DROPPED_REASON, False), ("target_too_short", True)])
def test_writing_nothing_is_refused_otherwise(reason: str, appending: bool) -> None:
    with pytest.raises(TooFewWritten, match=f"no example would be written.*{reason}"):
        check_enough_written(all_dropped(reason), 0.5, "unused", appending=appending)


def test_an_append_that_rejects_everything_is_refused_even_with_no_reject_limit() -> None:
    stats = empty_stats()
    stats.update(records_read=5, records_rejected=5, rejected_by_reason={"missing_field": 5})
    with pytest.raises(TooFewWritten, match="no example would be written.*missing_field"):
        check_enough_written(stats, 1.0, "unused", appending=True)
