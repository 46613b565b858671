"""Run a job end to end: check everything up front, launch the pipeline (which commits the dataset as its last
step, ``pipeline.commit_step``), wait for it or leave it running, print a short summary."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from seqpack.boundary import offsets_encoder
from seqpack.chat import check_segment_roundtrip, require_chat_template, unknown_special_strings
from seqpack.config import RunConfig
from seqpack.errors import RunFailedError, UsageError
from seqpack.generations import FoundFile
from seqpack.pipeline.appends import Selection, select_inputs
from seqpack.pipeline.build import BACKEND_TOKENIZER, ENCODER_CHOICE, META_DIR, build_pipeline
from seqpack.pipeline.commit import (
    Destination,
    abandon,
    check_output,
    is_committed,
    prepare_output,
    read_committed,
    save_tokenizer,
)
from seqpack.pipeline.commit_step import CommitPlan, refusal_message
from seqpack.pipeline.encoder_choice import choose_for_run, hf_only
from seqpack.pipeline.failures import STOP_EXCEPTIONS, as_run_failure, crash_summary, stop_on_termination
from seqpack.pipeline.live_progress import live_progress
from seqpack.pipeline.lock import DEFAULT_LEASE_SECONDS, OutputLock
from seqpack.pipeline.mixture import files_by_source
from seqpack.pipeline.run_audit import audit_facts, source_facts
from seqpack.pipeline.runners import check_can_leave, local_provision_info, pipeline_options
from seqpack.pipeline.warm_workers import preload_for_workers, warm_local_runner
from seqpack.pipeline.worker_logs import WorkerLog, capture_worker_output
from seqpack.prompt_templates import make_template, template_texts
from seqpack.schemas import Manifest, TokenizerInfo
from seqpack.schemas.stats import AccountingError
from seqpack.tokenizer import (
    DEFERRED,
    BackendPlan,
    TokenizerError,
    add_special_tokens,
    describe,
    equivalent_backend,
    load_backend,
    load_tokenizer,
    pad_id_of,
    pair_layout,
)
from seqpack.transforms.write import write_atomically


def _check_template(config: RunConfig, tokenizer: Any) -> None:
    """The template must work with this tokenizer; special-looking text it would split gets a warning."""
    if "joint" in (config.chat_boundary, config.pair_boundary):
        offsets_encoder(tokenizer)  # a slow tokenizer has no offsets: say so before any work
    if config.is_chat:
        require_chat_template(tokenizer)
        if config.chat_boundary == "turn":  # joint tokenizes the whole text: its pieces need not join up
            check_segment_roundtrip(tokenizer)
        return
    template = make_template(
        config.template,
        source_field=config.source_field,
        target_field=config.target_field,
        separator=config.separator,
    )
    for text in template_texts(template):
        for special, pieces in unknown_special_strings(tokenizer, text):
            logging.getLogger("seqpack").warning(
                "the template's %r is not a token of this tokenizer: it will be split into %s "
                "(pass --add-special-tokens %r to make it one token)", special, pieces, special
            )


def _check_up_front(config: RunConfig) -> tuple[list, Any, TokenizerInfo]:
    """Everything that can be wrong before any work starts: template, tokenizer, inputs, output."""
    from seqpack.transforms.read import resolve_inputs

    try:
        tokenizer = load_tokenizer(config.tokenizer, trust_remote_code=config.trust_remote_code)
        added = add_special_tokens(tokenizer, config.add_special_tokens)
        for each in config.per_source():  # a mixture: every source's template
            _check_template(each, tokenizer)
        pad_id = pad_id_of(tokenizer, config.pad_id)
    except (ValueError, TokenizerError) as error:
        raise UsageError(str(error)) from error
    pairs = any(not each.is_chat for each in config.per_source())
    if config.add_eos and pairs and tokenizer.eos_token_id is None:
        raise UsageError("the tokenizer has no EOS token to end targets with: pass --no-eos")
    try:
        files = resolve_inputs(config.inputs)
    except ValueError as error:
        raise UsageError(str(error)) from error
    _refuse_inputs_inside_output(files, config.output)
    files_by_source(config, files)  # a file two sources name is refused before any work
    return files, tokenizer, describe(tokenizer, config.tokenizer, pad_id, added)


def _refuse_inputs_inside_output(files: list, output: str) -> None:
    """Reading the output as input would read the dataset's own manifest, stats and shards as pairs."""
    root = output.rstrip("/") + "/" if "://" in output else os.path.abspath(output) + os.sep
    for input_file in files:
        path = input_file.path if "://" in input_file.path else os.path.abspath(input_file.path)
        if path.startswith(root):
            raise UsageError(
                f"input {input_file.path} is inside --output {output}: seqpack would read its own dataset as "
                "input. Keep inputs and output in separate directories."
            )


@dataclass(frozen=True)
class UpToDate:
    """An ``--append`` that found no input its dataset had not consumed: nothing was run or written."""

    output: str
    manifest: Manifest | None
    """The dataset's manifest; None when an ``--append`` into a new output found only empty files."""
    selection: Selection


@dataclass(frozen=True)
class Submitted:
    """A job launched with ``wait=False`` that is still running: it commits ``output`` itself, then releases
    the output lock (``lock``) that it holds until then."""

    output: str
    directory: str
    """The revision directory the job writes (``v000002``): the manifest names it once the job has committed."""
    lock: str
    lease_until: float


def run(
    config: RunConfig, beam_args: list[str] | None = None, *, wait: bool = True,
    lock_lease: float = DEFAULT_LEASE_SECONDS, progress: bool = False, verbose: bool = False,
    only: Mapping[str, tuple[int, float]] | None = None,
) -> tuple[Manifest, dict[str, Any]] | Submitted | UpToDate | None:
    """Run the job described by ``config``; return the committed manifest and statistics.

    With ``config.append`` the job reads only the inputs no generation of the dataset consumed and commits them
    as a new generation (``pipeline.appends``); with none, nothing runs and the result is an :class:`UpToDate`.

    The job commits the dataset itself, as its last step. With ``wait=False`` the launcher returns once the
    job is submitted (a :class:`Submitted`), leaving the output lock to the job for up to ``lock_lease``
    seconds; a runner that runs the job in place (the local one) has committed by then, and the committed
    manifest and statistics are returned as with ``wait``.

    With Dataflow's ``--dry_run`` the job is built and checked but not run, nothing is committed, and the
    result is None. A run that fails or is stopped (SIGTERM, Ctrl-C) removes what it wrote and releases the
    output lock; the previous dataset, if any, is untouched.

    ``progress`` prints a line on stderr every few seconds while the local runner works (see
    ``pipeline.live_progress``); other runners show their own. On the local runner the workers' log lines go to a
    file, shown only if the run fails, unless ``verbose`` (see ``pipeline.worker_logs``).

    ``only`` (``seqpack watch``) reads just these of the inputs' files, ``path -> (size, modified)``, and only
    while they are still so (``pipeline.appends.select_inputs``).

        >>> manifest, stats = run(RunConfig(inputs=["pairs.jsonl"], output="out", tokenizer="tok/"))
    """
    config.validate()
    if not wait:
        check_can_leave(list(beam_args or []))
    options, runner = pipeline_options(list(beam_args or []))
    # The driver reads the tokenizer and inputs, takes the lock and commits through Beam's filesystems before the
    # pipeline exists (which sets them too): the object store's options (--s3_endpoint_url) must reach them now.
    FileSystems.set_options(options)
    # The local workers start importing now, while the driver checks and gets the job ready.
    with warm_local_runner(options, runner, local_provision_info(options)) as runner:
        check_output(config)
        files, tokenizer, tokenizer_info = _check_up_front(config)
        job = _Job(config, files, tokenizer, tokenizer_info, options, runner)
        return _run_job(job, wait=wait, lock_lease=lock_lease, progress=progress, verbose=verbose, only=only)


def _run_job(
    job: _Job, *, wait: bool, lock_lease: float, progress: bool, verbose: bool,
    only: Mapping[str, tuple[int, float]] | None,
) -> tuple[Manifest, dict[str, Any]] | Submitted | UpToDate | None:
    """``run`` once everything is checked: the job under the output lock."""
    config, files, runner, options, tokenizer_info = job.config, job.files, job.runner, job.options, job.tokenizer_info
    created = "://" not in config.output and not os.path.exists(config.output)
    try:
        with _remove_if_left_empty(config.output, created), stop_on_termination() as stop, \
                OutputLock(config.output, lease_seconds=0 if wait else lock_lease, options=options) as lock:
            destination = prepare_output(config, lock)
            try:
                selection = select_inputs(config, files, destination.previous, tokenizer_info, only=only)
            except BaseException:
                abandon(destination)
                raise
            if not selection.files:
                abandon(destination)
                return UpToDate(config.output, destination.previous, selection)
            job = replace(job, files=selection.files, found=selection.found)
            with capture_worker_output(enabled=_is_local(runner) and not verbose) as worker_log:
                stop.cleanup = partial(_clean_up_after_stop, destination, lock, worker_log, created)
                try:
                    committed = job.launch(destination, lock, wait=wait, progress=progress)
                except BaseException as error:
                    if isinstance(error, Exception) and stop.signum is None and is_committed(destination):
                        committed = _committed_anyway(destination, error)
                    else:
                        abandon(destination)
                        failure = _reported(_refused(as_run_failure(error, config.output, stop)), worker_log)
                        if failure is error:
                            raise
                        raise failure from error
            if worker_log is not None:
                worker_log.discard()
            return committed
    except STOP_EXCEPTIONS as error:  # a stop before the job started: nothing was written
        raise as_run_failure(error, config.output) from error


@contextmanager
def _remove_if_left_empty(output: str, created: bool) -> Iterator[None]:
    """A run that fails into a directory it created leaves no empty directory behind."""
    try:
        yield
    except BaseException:
        if created:
            with suppress(OSError):
                os.rmdir(output)  # only succeeds when empty
        raise


def _clean_up_after_stop(destination: Destination, lock: OutputLock, worker_log: WorkerLog | None,
                         created: bool) -> None:
    """What a stopped run leaves behind, removed by the watchdog when the run itself cannot unwind (see
    ``failures.Stop``): its files, its worker log, its lock, and the output directory if it made it."""
    abandon(destination)
    if worker_log is not None:
        worker_log.discard()
    lock.release()
    if created:
        with suppress(OSError):
            os.rmdir(destination.output)


@dataclass(frozen=True)
class _Job:
    """What the checks up front resolved: everything a run needs besides where it writes."""

    config: RunConfig
    files: list
    tokenizer: Any
    tokenizer_info: TokenizerInfo
    options: Any
    runner: Any
    found: list[FoundFile] = field(default_factory=list)
    """The files read, as listed: the job records their content as consumed."""

    def launch(
        self, destination: Destination, lock: OutputLock, *, wait: bool, progress: bool
    ) -> tuple[Manifest, dict[str, Any]] | Submitted | None:
        """Build and start the job; wait for it (or not), then read back what it committed."""
        config = self.config
        if config.add_special_tokens:  # the trainer needs the extended tokenizer: it ships with the data
            save_tokenizer(self.tokenizer, destination)
        backend, check = _backend_plan(config, self.tokenizer, destination.staging, self.files,
                                       defer=_is_local(self.runner))
        tokenizer_info = replace(self.tokenizer_info, backend=backend.encoder if backend else "hf")
        if backend is not None and backend.encoder != "hf":
            preload_for_workers(self.runner, backend.tokenizer_json)
        pipeline = beam.Pipeline(runner=self.runner, options=self.options)
        plan = CommitPlan(config=config, tokenizer=tokenizer_info, destination=destination,
                          lock_token=lock.token, release_lock=not wait,
                          encoder_file=backend.encoder_file if backend else "")
        try:
            build_pipeline(pipeline, config, self.files, plan=plan, pad_id=self.tokenizer_info.pad_id,
                           found=self.found, backend=backend,
                           audit=audit_facts(config, self.tokenizer_info, self.tokenizer),
                           source_audits=source_facts(config, self.tokenizer_info, self.tokenizer))
            with live_progress(self.files, enabled=progress and _is_local(self.runner)):
                result = pipeline.run()
                if _is_dry_run(self.options):
                    abandon(destination)
                    return None
                if wait:
                    result.wait_until_finish()
                elif not _is_done(result):
                    lock.detach()  # the lock is the job's now: its commit step releases it
                    if hasattr(result, "detach"):  # a runner whose job would end with this process (Dask)
                        result.detach()
                    return Submitted(output=config.output, directory=destination.directory, lock=lock.path,
                                     lease_until=lock.lease_until)
        finally:  # Beam makes this directory when the pipeline is built and removes it only after a run
            shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)
            if check is not None:
                check.join()
        return read_committed(destination)


def _is_done(result: Any) -> bool:
    """Whether the job already finished when ``run()`` returned, as on the local runner, which runs it in place."""
    from apache_beam.runners.runner import PipelineState

    try:
        return result.state == PipelineState.DONE
    except Exception:  # noqa: BLE001 - a runner that cannot tell yet: the job is still running
        return False


def _refused(failure: BaseException) -> BaseException:
    """A job whose commit step refused to commit fails with the refusal's message (it arrives as a worker's
    traceback text), not as a crash."""
    message = refusal_message(failure)
    if message is None or isinstance(failure, RunFailedError):
        return failure
    return RunFailedError(message)


def _committed_anyway(destination: Destination, error: Exception) -> tuple[Manifest, dict[str, Any]]:
    """The job failed after its commit step switched the manifest (in the cleanup that follows): the dataset
    is committed and whole; what the cleanup left, the next run into the output removes."""
    logging.getLogger("seqpack").warning(
        "the job failed after it committed %s (%s); the dataset is complete, and the next run into %s removes "
        "the files the failure left", destination.directory, crash_summary(error), destination.output,
    )
    return read_committed(destination)


def _reported(failure: BaseException, worker_log: WorkerLog | None) -> BaseException:
    """With the workers' log captured, an unexpected error becomes one line that points at the log (which gets
    the traceback); errors seqpack explains itself keep their message, and their log is removed."""
    if worker_log is None:
        return failure
    if isinstance(failure, (RunFailedError, AccountingError, UsageError)) or not isinstance(failure, Exception):
        worker_log.discard()
        return failure
    worker_log.append_traceback(failure)
    return RunFailedError(
        f"{crash_summary(failure)}. Nothing was committed. The traceback and the workers' log are in "
        f"{worker_log.path} (seqpack run --verbose shows them as they happen)"
    )


def _backend_plan(config: RunConfig, tokenizer: Any, staging: str, files: list, *, defer: bool
                  ) -> tuple[BackendPlan | None, threading.Thread | None]:
    """Save the Rust tokenizer for the workers when it alone tokenizes pairs exactly as ``tokenizer`` does, with
    the encoder chosen for it (``pipeline.encoder_choice``).

    With ``defer`` (the local runner) and ``--tokenizer-backend auto``, the fast encoder is checked on a thread
    while the job starts (about a second, which the workers' start-up hides): the plan's encoder is ``deferred``,
    the choice follows in a file, and the thread is returned to be joined. ``fast`` is checked first: it may
    refuse the run."""
    if config.is_chat:  # chat templates need transformers
        return hf_only(config, "chat templates are rendered and tokenized by transformers"), None
    rust = equivalent_backend(tokenizer)
    if rust is None:
        return hf_only(config, "its Rust backend alone does not give this tokenizer's ids (its class changes "
                       "texts in Python, or its ids are random)"), None
    definition = rust.to_str()
    path = FileSystems.join(staging, META_DIR, BACKEND_TOKENIZER)
    write_atomically(path, definition.encode("utf-8"))
    layout = pair_layout(tokenizer, add_eos=config.add_eos)
    if not defer or config.tokenizer_backend != "auto":
        return BackendPlan(path, layout, choose_for_run(config, rust, definition, files)), None
    choice = FileSystems.join(staging, META_DIR, ENCODER_CHOICE)
    check = threading.Thread(target=_choose_into, args=(config, path, definition, files, choice),
                             name="seqpack-encoder-check", daemon=True)
    check.start()
    return BackendPlan(path, layout, DEFERRED, choice), check


def _choose_into(config: RunConfig, tokenizer_json: str, definition: str, files: list, choice: str) -> None:
    """Check the fast encoder (on a Rust tokenizer of its own: the driver's is in use meanwhile) and write the
    choice; a check that fails unexpectedly chooses Hugging Face, which is always exact."""
    encoder = "hf"
    try:
        encoder = choose_for_run(config, load_backend(tokenizer_json, definition), definition, files)
    except Exception as error:  # noqa: BLE001 - the run goes on with the exact encoder
        logging.getLogger("seqpack").warning("tokenizing with Hugging Face: checking the fast encoder failed: %s",
                                             error)
    finally:
        write_atomically(choice, encoder.encode("utf-8"))


def _is_dry_run(options: Any) -> bool:
    return bool(options.get_all_options().get("dry_run"))


def _is_local(runner: object) -> bool:
    """The local FnApiRunner: its workers run on this machine and can reach a local progress directory."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return isinstance(runner, FnApiRunner)
