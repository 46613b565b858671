"""``seqpack compact``: many small generations repacked into one, as a new generation that replaces them at once.

Every ``seqpack run --append`` adds a generation with shards of its own; after many small appends a dataset is
many small, separately shuffled pieces. Compaction reads the chosen generations' shards back as examples, shuffles
them together and packs them again with the dataset's own settings (``pipeline.compact_job``), and commits the
result as one new generation that replaces them, in the same atomic manifest switch as any run
(``pipeline.commit``): a reader sees the old generations or the new one, never both, never neither.

What is kept, exactly:

- the examples: each example's tokens and labels, and its split. The commit refuses unless the examples digest of
  what was packed equals that of what was read, and records it as the new generation's ``examples_digest``, which
  ``seqpack verify`` recomputes from the new shards;
- the consumed inputs: the new generation lists every input the replaced generations consumed, so a later
  ``--append`` still skips them;
- with ``--dedup exact``, the dedup state: the new generation's key files hold the union of the replaced
  generations' keys (written by the job's workers, ``pipeline.compact_job``), so a later ``--append`` still drops
  a pair they held;
- the accounting: the new ``stats.json`` is the replaced generations' statistics merged, with only the block-level
  figures (blocks, fill, tokens written, pieces written) those of the new blocks, so the records read still equal
  the examples written plus rejected plus dropped; their rejected records are carried into the new generation.

Refused: ``--packing wrap`` (examples straddle blocks and cannot be cut back whole; see ``check_can_compact``),
fewer than two generations, and ids the dataset does not have.

    result = compact("out/", generations=[1, 2, 3])
    result.manifest.generations[-1].replaces      # [1, 2, 3]
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass, fields
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from seqpack.config import RunConfig
from seqpack.errors import RunFailedError, UsageError
from seqpack.pipeline.build import key_files_of
from seqpack.pipeline.commit import (
    Destination,
    abandon,
    committed_manifest,
    is_committed,
    prepare_output,
    read_committed,
)
from seqpack.pipeline.commit_step import refusal_message
from seqpack.pipeline.compact_job import CompactPlan, build_compaction, carried_stats
from seqpack.pipeline.failures import crash_summary
from seqpack.pipeline.lock import OutputLock
from seqpack.pipeline.output_files import read_bytes
from seqpack.pipeline.runners import pipeline_options
from seqpack.pipeline.worker_logs import WorkerLog, capture_worker_output
from seqpack.schemas import MANIFEST_NAME, REJECTED_FILE, STATS_NAME, TOKENIZER_DIR, DatasetFormatError, Manifest
from seqpack.schemas import stats as stats_format
from seqpack.schemas.manifest import ConsumedInput, GenerationInfo
from seqpack.transforms.unpack import ShardToCut
from seqpack.transforms.write import atomic_output
from seqpack.unpacking import NotWholeExamples


@dataclass(frozen=True)
class Compacted:
    """What ``compact`` committed: the dataset's manifest and the new generation's statistics, and what they
    replaced (the replaced generations, as the previous manifest listed them, and their merged statistics)."""

    output: str
    manifest: Manifest
    stats: dict[str, Any]
    replaced: list[GenerationInfo]
    replaced_stats: dict[str, Any]


def compact(output: str, *, generations: list[int] | None = None, shard_bytes: int | None = None,
            beam_args: list[str] | None = None, verbose: bool = False) -> Compacted:
    """Replace ``generations`` of the dataset in ``output`` (all of them by default) with one new generation.

    On the local runner the workers' log lines go to a file, shown only if the job fails, unless ``verbose``
    (``pipeline.worker_logs``)."""
    options, runner = pipeline_options(list(beam_args or []))
    FileSystems.set_options(options)  # the driver reads the manifest and stats through Beam's filesystems
    manifest = _read_manifest(output)
    config = config_of(manifest, output, shard_bytes)
    check_can_compact(manifest, output)
    chosen = choose_generations(manifest, generations, output)
    with OutputLock(output, options=options) as lock:
        destination = prepare_output(config, lock, keep=lambda previous: _kept(previous, chosen))
        try:
            previous = destination.previous
            if previous is None or [g.id for g in previous.generations] != [g.id for g in manifest.generations]:
                raise UsageError(f"{output} changed while compaction started: run it again")
            replaced = [previous.generation(i) for i in chosen]
            replaced_stats = [_read_stats(output, g) for g in replaced]
            _carry_files(output, previous, replaced, destination)
        except BaseException:
            abandon(destination)
            raise
        plan = CompactPlan(config=config, tokenizer=previous.tokenizer, destination=destination,
                           lock_token=lock.token, replaces=tuple(chosen), inputs=tuple(consumed_inputs(replaced)))
        shards = [ShardToCut(split, FileSystems.join(output, shard.path))
                  for g in replaced for split, info in sorted(g.splits.items()) for shard in info.shards]
        with capture_worker_output(enabled=isinstance(runner, FnApiRunner) and not verbose) as worker_log:
            manifest, stats = _launch(plan, shards, carried_stats(replaced_stats), key_files_of(output, replaced),
                                      options, runner, worker_log)
    return Compacted(output, manifest, stats, replaced, stats_format.merge_stats(replaced_stats))


def _launch(plan: CompactPlan, shards: list[ShardToCut], carried: dict[str, Any], key_files: list[str],
            options: Any, runner: Any, worker_log: WorkerLog | None) -> tuple[Manifest, dict[str, Any]]:
    """Run the job (it commits as its last step); a failure removes what it wrote and says why in one line."""
    destination = plan.destination
    pipeline = beam.Pipeline(runner=runner, options=options)
    try:
        build_compaction(pipeline, plan, shards, carried, key_files)
        pipeline.run().wait_until_finish()
    except Exception as error:
        if not is_committed(destination):
            abandon(destination)
            raise _failure(error, worker_log) from error
    except BaseException:  # stopped (Ctrl-C): what the job wrote goes, the dataset stays as it was
        abandon(destination)
        raise
    finally:  # Beam makes this directory when the pipeline is built and removes it only after a run
        shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)
    if worker_log is not None:
        worker_log.discard()
    return read_committed(destination)


def _failure(error: Exception, worker_log: WorkerLog | None) -> RunFailedError:
    """One line for a job that failed: a refusal's or a bad shard's own message, else where the traceback is."""
    message = refusal_message(error)
    if message is None:
        bad_shard = _bad_shard_message(error)
        message = f"{bad_shard}. Nothing was committed; `seqpack verify` checks the shards" if bad_shard else None
    if message is not None:
        if worker_log is not None:
            worker_log.discard()
        return RunFailedError(message)
    if worker_log is None:
        return RunFailedError(f"{crash_summary(error)}. Nothing was committed; the dataset is as it was")
    worker_log.append_traceback(error)
    return RunFailedError(
        f"{crash_summary(error)}. Nothing was committed; the dataset is as it was. The traceback and the workers' "
        f"log are in {worker_log.path} (seqpack compact --verbose shows them as they happen)"
    )


# --------------------------------------------------------------------------------------------- the checks


def _bad_shard_message(error: BaseException) -> str | None:
    """The message of a ``NotWholeExamples`` behind ``error``: raised here (the local runner in this process), or
    as a worker's traceback text (``...NotWholeExamples: v000001/...: a label is ...``)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, NotWholeExamples):
            return re.sub(r" \[while running '[^']*'\]$", "", str(seen).strip())
        seen = seen.__cause__ or seen.__context__
    found = re.findall(rf"\b{NotWholeExamples.__name__}: (.+?)(?: \[while running '[^']*'\])?$", str(error),
                       flags=re.MULTILINE)
    return found[-1].strip() if found else None


def choose_generations(manifest: Manifest, wanted: list[int] | None, output: str) -> list[int]:
    """The ids to replace: ``wanted`` (all by default), each known, at least two."""
    have = [g.id for g in manifest.generations]
    chosen = sorted(set(have if wanted is None else wanted))
    unknown = [i for i in chosen if i not in have]
    if unknown:
        raise UsageError(
            f"{output} has no generation {', '.join(map(str, unknown))}; its generations are "
            f"{', '.join(map(str, have))} (--generations takes ids from that list)"
        )
    if len(chosen) < 2:
        if len(have) < 2:
            raise UsageError(
                f"{output} has one generation ({have[0]}): there is nothing to compact (a dataset written by a "
                "seqpack without generations is one generation; `seqpack run --rebuild` repacks it)"
            )
        raise UsageError(
            f"--generations names one generation ({chosen[0]}): compaction replaces two or more with one; "
            f"name several of {', '.join(map(str, have))}, or leave --generations out to compact them all"
        )
    return chosen


def check_can_compact(manifest: Manifest, output: str) -> None:
    """Refuse what compaction cannot repack exactly (a ``--dedup exact`` dataset can be: its keys are carried)."""
    if manifest.sources:
        raise UsageError(
            f"{output} is a mixture (its manifest lists sources): compaction does not yet carry the examples' "
            "source ids. `seqpack run --rebuild` repacks the mixture from its inputs"
        )
    if manifest.packing == "wrap":
        raise UsageError(
            f"{output} was packed with --packing wrap: its examples run across blocks and cannot be cut back into "
            "whole examples, so compaction cannot keep them exactly. `seqpack run --rebuild` repacks from the inputs"
        )


def config_of(manifest: Manifest, output: str, shard_bytes: int | None) -> RunConfig:
    """The dataset's own settings, as its manifest recorded them, writing into ``output``."""
    known = {f.name for f in fields(RunConfig)}
    recorded = {k: v for k, v in manifest.config.items() if k in known}
    recorded["add_special_tokens"] = tuple(recorded.get("add_special_tokens") or ())
    # Each replaced generation passed --max-reject-fraction when it was committed; their records are not read again.
    recorded.update(output=output, overwrite=False, append=False, max_reject_fraction=1.0)
    if shard_bytes is not None:
        recorded["shard_bytes"] = shard_bytes
    try:
        config = RunConfig(**recorded)
    except TypeError as error:
        raise UsageError(f"{output}/{MANIFEST_NAME} records a configuration this seqpack cannot read ({error})") \
            from error
    if shard_bytes is not None and shard_bytes < 1:
        raise UsageError(f"--shard-bytes must be positive, got {shard_bytes}")
    return config


def consumed_inputs(replaced: list[GenerationInfo]) -> list[ConsumedInput]:
    """Every input the replaced generations consumed, once."""
    unique = {(i.path, i.sha256, i.start, i.stop): i for g in replaced for i in g.inputs}
    return sorted(unique.values(), key=lambda i: (i.path, i.start, i.sha256))


def _kept(previous: Manifest, chosen: list[int]) -> list[int]:
    return [g.id for g in previous.generations if g.id not in chosen]


# ------------------------------------------------------------------------------------------ files carried


def _read_manifest(output: str) -> Manifest:
    manifest = committed_manifest(output)
    if manifest is None:
        raise UsageError(f"{output} is not a seqpack dataset (no {MANIFEST_NAME}): compact needs a committed dataset")
    return manifest


def _read_stats(output: str, generation: GenerationInfo) -> dict[str, Any]:
    name = generation.path_of(STATS_NAME)
    path = FileSystems.join(output, name)
    try:
        return stats_format.parse(read_bytes(path), where=path)
    except (OSError, DatasetFormatError) as error:
        raise UsageError(
            f"cannot read generation {generation.id}'s statistics ({error}): compaction carries them into the new "
            "generation. `seqpack verify` checks the dataset"
        ) from error


def _carry_files(output: str, previous: Manifest, replaced: list[GenerationInfo], destination: Destination) -> None:
    """Into the new generation's directory: the replaced generations' rejected records, one after the other, and
    the newest generation's tokenizer (readers take the tokenizer from the newest generation)."""
    rejected = [g.path_of(REJECTED_FILE) for g in replaced if g.path_of(REJECTED_FILE) in g.files]
    if rejected:
        with atomic_output(FileSystems.join(destination.root, REJECTED_FILE)) as out:
            for name in rejected:
                with FileSystems.open(FileSystems.join(output, name)) as source:
                    while chunk := source.read(8 << 20):
                        out.write(chunk)
    newest = previous.generations[-1]
    prefix = f"{newest.directory}/{TOKENIZER_DIR}/"
    for name in (path for path in newest.files if path.startswith(prefix)):
        target = FileSystems.join(destination.root, TOKENIZER_DIR, name[len(prefix) :])
        with atomic_output(target) as out:
            out.write(read_bytes(FileSystems.join(output, name)))


# ------------------------------------------------------------------------------------------------ summary


def compacted_summary(result: Compacted) -> str:
    """What ``seqpack compact`` says: which generations became which, blocks and fill before and after."""
    generation = result.manifest.generations[-1]
    before_shards = sum(len(g.shard_paths()) for g in result.replaced)
    old, new = result.replaced_stats, result.stats
    old_fill = old["tokens_written"] / old["block_tokens"] if old["block_tokens"] else 0.0
    ids = ", ".join(str(g.id) for g in result.replaced)
    return "\n".join([
        f"seqpack: compacted generations {ids} of {result.output} into generation {generation.id} "
        f"(now {len(result.manifest.generations)} generation{'s' * (len(result.manifest.generations) != 1)})",
        f"  {generation.examples:,} examples · {generation.tokens:,} tokens, kept exactly "
        f"(examples digest {generation.examples_digest})",
        f"  {_plural(old['blocks'], 'block')} in {_plural(before_shards, 'shard')} → "
        f"{_plural(new['blocks'], 'block')} in {_plural(len(generation.shard_paths()), 'shard')}; "
        f"fill {old_fill:.1%} → {new['fill']:.1%}",
        f"  check it: seqpack verify {shlex.quote(result.output)}",
    ])


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'s' * (count != 1)}"
