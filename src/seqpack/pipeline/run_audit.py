"""The audit inside every ``seqpack run`` (``--audit``), as the driver sees it: the facts its shard writers check
blocks against, and the summary's line about what they found.

The checks run on the workers, where blocks are written (``transforms.audit_shards``); their counts reach
``stats.json`` with every other statistic, and ``--audit strict`` makes findings a refusal to commit
(``commit_checks.check_audit``).

    facts = audit_facts(config, tokenizer_info, tokenizer)      # None with --audit off
    line = audit_line(manifest.config, stats, "out")             # "  audit: clean"
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from seqpack.audit import AuditFacts, end_of_turn_ids_of, findings_line
from seqpack.config import RunConfig
from seqpack.schemas import TokenizerInfo


def audit_facts(config: RunConfig, tokenizer_info: TokenizerInfo, tokenizer: Any) -> AuditFacts | None:
    """What the shard writers check blocks against, from the run's settings and the loaded tokenizer (whose
    end-of-turn tokens a chat dataset's turns end with: the manifest does not list them); None with ``--audit
    off``."""
    if config.audit == "off":
        return None
    turns = end_of_turn_ids_of(tokenizer.get_vocab()) if config.is_chat else set()
    return AuditFacts.of_settings(config.to_dict(), tokenizer_info, turns)


def source_facts(config: RunConfig, tokenizer_info: TokenizerInfo, tokenizer: Any) -> tuple[AuditFacts, ...]:
    """A mixture's facts by source id (each source's own template, labels and EOS), empty without sources or with
    ``--audit off``."""
    if config.audit == "off" or not config.sources:
        return ()
    return tuple(audit_facts(source, tokenizer_info, tokenizer) for source in config.per_source())


def audit_line(config: Mapping[str, Any], stats: Mapping[str, Any], output: str) -> str | None:
    """The run summary's line: ``audit: clean``, or the findings by code and the command that shows them; None
    when the run was not audited (``--audit off``)."""
    if config.get("audit", "off") == "off":
        return None
    counts = stats.get("audit_by_code", {})
    shown = f" (seqpack audit {shlex.quote(output)} shows them)" if counts else ""
    return f"  audit: {findings_line(counts)}{shown}"
