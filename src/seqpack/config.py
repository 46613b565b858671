"""The resolved configuration of a run: every choice that shapes the output, recorded in the manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from seqpack.boundary import CHAT_BOUNDARIES, PAIR_BOUNDARIES
from seqpack.chat import STYLES as CHAT_STYLES
from seqpack.chat import TRAIN_ON as CHAT_TRAIN_ON
from seqpack.errors import UsageError
from seqpack.masking import DEFAULT_OVERLONG, OVERLONG_ALIASES, OVERLONG_POLICIES, TRAIN_ON
from seqpack.packing import PACKING_STRATEGIES
from seqpack.sources import WEIGHT_BY, SourceConfig, check_sources, source_of_dict

FILE_FORMATS = ("parquet", "arrow")
DEDUP_MODES = ("none", "exact")
SHUFFLE_MODES = ("auto", "runner", "spill")
TOKENIZER_BACKENDS = ("auto", "hf", "fast")
AUDIT_MODES = ("warn", "strict", "off")
DEFAULT_BUCKET_TOKENS = 1 << 22
DEFAULT_SHARD_BYTES = 256 << 20
DEFAULT_MAX_REJECT_FRACTION = 0.5
"""A curated corpus loses a few percent of its records; a wrong field name or template loses nearly all. Half
sits well between the two, so a misconfigured run fails instead of committing a near-empty dataset; a corpus
that really is mostly junk says so with ``--max-reject-fraction 1``."""




@dataclass(frozen=True, kw_only=True)
class RunConfig:
    inputs: list[str]
    output: str
    tokenizer: str
    max_length: int = 2048
    template: str = "plain"
    source_field: str = "source"
    target_field: str = "target"
    separator: str = " = "
    add_eos: bool = True
    train_on: str = "target"
    overlong: str = DEFAULT_OVERLONG
    packing: str = "bfd"
    seed: int = 0
    bucket_tokens: int = DEFAULT_BUCKET_TOKENS
    """Tokens per shuffle bucket: bounds the memory a worker needs to pack one bucket."""
    shard_bytes: int = DEFAULT_SHARD_BYTES
    """About how large a shard file grows: consecutive buckets share a shard (``transforms.shard_groups``), so
    the number of files follows the data's size over this, not over ``bucket_tokens``."""
    shuffle: str = "auto"
    """How buckets gather their examples: ``spill`` (each reads its slice of every spill file), ``runner`` (the
    runner's GroupByKey), or ``auto`` (spill on the local runner, runner elsewhere). Same bytes either way."""
    tokenizer_backend: str = "auto"
    """What encodes pairs: ``hf`` (Hugging Face ``tokenizers``), ``fast`` (fastokens, failing the run if it cannot
    be used) or ``auto`` (fastokens when it agrees with ``hf`` on the job's texts; ``seqpack.fast_encoder``).
    The same bytes either way."""
    file_format: str = "parquet"
    validation_fraction: float = 0.0
    row_group_size: int = 256
    pad_id: int | None = None
    trust_remote_code: bool = False
    overwrite: bool = False
    """Replace the dataset in ``output`` (``--overwrite``, ``--rebuild``): one new generation from every input."""
    append: bool = False
    """Add a generation holding only the inputs no generation of the dataset in ``output`` consumed."""
    max_record_bytes: int = 64 << 20
    max_reject_fraction: float = DEFAULT_MAX_REJECT_FRACTION
    """Fail (commit nothing) when more than this fraction of the records read is rejected."""
    audit: str = "warn"
    """The audit of every written example (``seqpack audit``'s checks, made by the shard writers): ``warn`` counts
    findings in ``stats.json`` and the summary, ``strict`` also commits nothing when there are any, ``off``
    skips it. It shapes no example, so generations may differ in it."""
    dedup: str = "none"
    """``exact``: drop exact duplicate (source, target) pairs or conversations, keeping the first."""
    min_target_tokens: int = 0
    max_source_tokens: int | None = None
    add_special_tokens: tuple[str, ...] = ()
    chat_style: str = "auto"
    """``--template chat``: how records hold conversations (``auto``, ``messages``, ``sharegpt``, ``pair``)."""
    messages_field: str | None = None
    role_map: dict[str, str] = field(default_factory=dict)
    system: str | None = None
    chat_boundary: str = "turn"
    """``--template chat``: ``turn`` tokenizes each turn on its own, ``joint`` the whole rendering (``boundary``)."""
    pair_boundary: str = "split"
    """Pairs: ``split`` tokenizes source and target separately, ``joint`` as one text (``seqpack.boundary``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    sources: tuple[SourceConfig, ...] = ()
    """A mixture (``seqpack.sources``): each source reads its own inputs with its own options; ``inputs`` is then
    the union of theirs. Empty: one source, the top-level options (a run as before mixtures)."""
    weight_by: str = "tokens"
    """What the sources' weights are shares of: ``tokens`` or ``examples``."""
    mix_total_tokens: int | None = None
    """The mixture's size in tokens; None: as large as the sources and weights allow."""

    def __post_init__(self) -> None:
        sources = tuple(s if isinstance(s, SourceConfig) else source_of_dict(s) for s in self.sources)
        object.__setattr__(self, "sources", sources)
        if sources and not self.inputs:  # every input a mixture reads, for the driver to list, lock and hash
            object.__setattr__(self, "inputs", [pattern for source in sources for pattern in source.inputs])
        if self.is_chat and self.train_on == "target":  # the pairs default means "the answers" in a chat
            object.__setattr__(self, "train_on", "assistant")
        # ``truncate`` (the default before ``truncate-target``) is recorded under its new name.
        object.__setattr__(self, "overlong", OVERLONG_ALIASES.get(self.overlong, self.overlong))

    @property
    def is_chat(self) -> bool:
        return self.template == "chat"

    def validate(self) -> None:
        """Raise ``UsageError`` for values that cannot work, with what to pass instead."""
        checks = [
            (self.max_length >= 8, f"--max-length must be at least 8, got {self.max_length}"),
            (self.train_on in self.train_on_choices, f"--train-on must be one of {', '.join(self.train_on_choices)}"),
            (self.chat_style in CHAT_STYLES, f"--chat-style must be one of {', '.join(CHAT_STYLES)}"),
            (self.overlong in OVERLONG_POLICIES, f"--overlong must be one of {', '.join(OVERLONG_POLICIES)}"),
            (self.packing in PACKING_STRATEGIES, f"--packing must be one of {', '.join(PACKING_STRATEGIES)}"),
            (self.file_format in FILE_FORMATS, f"--format must be one of {', '.join(FILE_FORMATS)}"),
            (0.0 <= self.validation_fraction < 1.0, "--validation-fraction must be in [0, 1)"),
            (self.bucket_tokens >= self.max_length, "--bucket-tokens must be at least --max-length"),
            (self.row_group_size >= 1, "--row-group-size must be positive"),
            (self.shard_bytes >= 1, f"--shard-bytes must be positive, got {self.shard_bytes}"),
            (bool(self.inputs), "--input is required"),
            (not (self.append and self.overwrite), "--append adds to the dataset, --overwrite/--rebuild replaces "
             "it: pass one of them"),
            (self.dedup in DEDUP_MODES, f"--dedup must be one of {', '.join(DEDUP_MODES)}"),
            (self.audit in AUDIT_MODES, f"--audit must be one of {', '.join(AUDIT_MODES)}"),
            (self.shuffle in SHUFFLE_MODES, f"--shuffle must be one of {', '.join(SHUFFLE_MODES)}"),
            (self.tokenizer_backend in TOKENIZER_BACKENDS,
             f"--tokenizer-backend must be one of {', '.join(TOKENIZER_BACKENDS)}"),
            (self.min_target_tokens >= 0, "--min-target-tokens must be >= 0"),
            (0.0 <= self.max_reject_fraction <= 1.0, "--max-reject-fraction must be between 0 and 1"),
            (self.max_source_tokens is None or self.max_source_tokens >= 0, "--max-source-tokens must be >= 0"),
            *self._boundary_checks(),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        self._validate_sources()

    def _validate_sources(self) -> None:
        """A mixture's sources: names and weights (``sources.check_sources``), and each source's options as a
        run of its own would check them."""
        if not self.sources:
            return
        check_sources(self.sources)
        if self.inputs != [pattern for source in self.sources for pattern in source.inputs]:
            raise UsageError("with sources, give each source its own inputs (input=... in the source), not --input")
        if self.template != "plain":
            raise UsageError("with sources, give each source its own template (template=... in the source), not "
                             "--template")
        if self.weight_by not in WEIGHT_BY:
            raise UsageError(f"--weight-by must be one of {', '.join(WEIGHT_BY)}, got {self.weight_by!r}")
        if self.mix_total_tokens is not None and self.mix_total_tokens < 1:
            raise UsageError(f"--mix-total-tokens must be positive, got {self.mix_total_tokens}")
        if self.overlong == "split":  # the weighting keeps or repeats pieces, the accounting counts examples
            raise UsageError("a mixture cannot take --overlong split: its weights would keep or repeat an example's "
                             "pieces apart; use --overlong truncate-target (the default) or --overlong drop")
        for source, config in zip(self.sources, self.per_source(), strict=True):
            try:
                config.validate()
            except UsageError as error:
                raise UsageError(f"source {source.name!r}: {error}") from None

    def per_source(self) -> list[RunConfig]:
        """One configuration per source, as if each source were a run of its own (its template, fields, labels
        and filters; the mixture's tokenizer, max_length and the rest); ``[self]`` without sources."""
        if not self.sources:
            return [self]
        return [replace(self, sources=(), **{**source.run_options(), "inputs": list(source.inputs)})
                for source in self.sources]

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(source.name for source in self.sources)

    def _boundary_checks(self) -> list[tuple[bool, str]]:
        return [
            (self.chat_boundary in CHAT_BOUNDARIES, f"--chat-boundary must be one of {', '.join(CHAT_BOUNDARIES)}"),
            (self.pair_boundary in PAIR_BOUNDARIES, f"--pair-boundary must be one of {', '.join(PAIR_BOUNDARIES)}"),
            (self.is_chat or self.chat_boundary == "turn", "--chat-boundary is for --template chat: pairs take "
             "--pair-boundary"),
            (not self.is_chat or self.pair_boundary == "split", "--pair-boundary is for pair templates: "
             "--template chat takes --chat-boundary"),
        ]

    @property
    def train_on_choices(self) -> tuple[str, ...]:
        return CHAT_TRAIN_ON if self.is_chat else TRAIN_ON

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
