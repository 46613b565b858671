"""What must hold before a revision is committed, besides the accounting identity: enough was written.

A wrong field name or template rejects every record; a filter set too tight drops every example. Committing
(nearly) nothing would replace a good dataset with an empty one, so the commit step refuses, naming the top
reason and an example of it.
"""

from __future__ import annotations

import json
from typing import Any

from apache_beam.io.filesystems import FileSystems

from seqpack.audit import findings_line
from seqpack.errors import RunFailedError
from seqpack.schemas.stats import AUDIT_PLACES
from seqpack.transforms.dedup import DROPPED_REASON as DUPLICATE


class TooFewWritten(RunFailedError):
    """The run would commit an empty dataset, or one that lost more records than ``--max-reject-fraction``."""


def check_enough_written(stats: dict[str, Any], max_reject_fraction: float, rejected_file: str, *,
                         appending: bool = False) -> None:
    """A wrong field name or template rejects every record: fail loudly rather than commit (nearly) nothing.

    ``appending``: the run adds a generation to a dataset; one whose records the dataset already holds (all
    dropped as duplicates) is committed empty, so its inputs are recorded as consumed, not read again and again."""
    read, rejected = stats["records_read"], stats["records_rejected"]
    written = sum(stats["examples_by_split"].values())
    if read == 0:
        raise TooFewWritten("no records were read from the inputs: nothing to write, nothing was committed")
    only_duplicates = appending and stats["examples_dropped"] > 0 and set(stats["dropped_by_reason"]) == {DUPLICATE}
    if (written or only_duplicates) and rejected <= max_reject_fraction * read:
        return
    dropped = stats["examples_dropped"]
    if written == 0 and dropped >= rejected:
        drops = ", ".join(f"{reason} {n:,}" for reason, n in sorted(stats["dropped_by_reason"].items()))
        raise TooFewWritten(
            f"no example would be written: of {read:,} records, {dropped:,} were dropped ({drops})"
            + (f" and {rejected:,} rejected" if rejected else "") + "; nothing was committed: check the filters "
            "(--max-length, --overlong, --min-target-tokens, --max-source-tokens, --dedup)"
        )
    reason, count = max(stats["rejected_by_reason"].items(), key=lambda item: (item[1], item[0]))
    limit = "no example would be written" if written == 0 else (
        f"{rejected / read:.0%} of the records were rejected, more than --max-reject-fraction "
        f"{max_reject_fraction:g}")
    raise TooFewWritten(
        f"{limit} ({rejected:,} of {read:,}); the top reason is {reason} ({count:,}), for example "
        f"{_first_rejection(rejected_file, reason)}. Nothing was committed: fix the input or the options "
        "(field names, --template)" + ("" if written == 0 else ", or pass --max-reject-fraction 1 to keep them")
    )


class AuditFindings(RunFailedError):
    """``--audit strict``: the run's audit found examples that do not take loss as the run meant them to."""


def check_audit(stats: dict[str, Any], mode: str) -> None:
    """With ``--audit strict``, findings refuse the commit, as an accounting error does: one line with the
    counts and the first example's place."""
    counts = stats.get("audit_by_code", {})
    if mode != "strict" or not counts:
        return
    code = max(counts, key=lambda name: (counts[name], name))
    places = stats.get(AUDIT_PLACES, {}).get(code)
    first = (f"; the first {code} is example #{places[0]['example'] + 1} of row {places[0]['row']} of "
             f"{places[0]['shard']}" if places else "")
    raise AuditFindings(
        f"--audit strict: the audit found {findings_line(counts)}{first}. Nothing was committed: fix the data or "
        "the options (--template, --train-on, --no-eos, --overlong), or pass --audit warn to commit and see "
        "them with seqpack audit"
    )


def _first_rejection(path: str, reason: str, *, scan_bytes: int = 64 << 20) -> str:
    """``file:line: detail`` of the first rejected record with ``reason`` (read from the start of ``path``)."""
    read = 0
    try:
        with FileSystems.open(path) as handle:
            for line in handle:
                read += len(line)
                entry = json.loads(line)
                if entry.get("reason") == reason:
                    where = f"{entry.get('file')}:{entry['line']}" if entry.get("line") else entry.get("file")
                    return f"{where}: {entry.get('detail')}"
                if read > scan_bytes:
                    break
    except (OSError, ValueError):
        pass
    return f"see {path}"
