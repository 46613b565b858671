"""Which Beam runner a run uses, and the Beam pipeline options it passes on unchanged.

With no ``--runner``, seqpack runs locally on Beam's FnApiRunner, one worker process per core (Beam's default
DirectRunner first tries the Prism runner, which downloads a binary). ``--runner DaskRunner`` means seqpack's own
Dask runner (``pipeline.dask_runner``). A flag that no Beam options class knows is refused up front, with the
option it most looks like.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterable
from typing import Any, TypeVar

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from seqpack.errors import UsageError, closest

T = TypeVar("T", bound=PipelineOptions)


class RunOptions(PipelineOptions):
    """Beam's pipeline options, each view of them made once.

    Beam makes a view (an argparse parser of that class's options, the flags parsed again) every time it asks for
    one: building seqpack's pipeline asks ~430 times, a quarter of a second of the driver's start, which every
    run waits for. Views share the options' values (Beam documents that a change made through one view shows in
    all of them), so a view kept is the view Beam would have made again.
    """

    def view_as(self, cls: type[T]) -> T:
        views = self.__dict__.setdefault(_VIEWS, {})
        if cls not in views:
            views[cls] = super().view_as(cls)
        return views[cls]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled and deep-copied (a pipeline copies its options) without the views: they are remade on demand."""
        state = super().__getstate__()
        return {name: value for name, value in state.items() if name != _VIEWS}


_VIEWS = "_seqpack_views"


def _all_option_classes() -> list[type[PipelineOptions]]:
    found, pending = [], [PipelineOptions]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def _beam_parser() -> argparse.ArgumentParser:
    """A parser of every Beam pipeline option loaded so far (``--dask_*`` once the Dask runner is loaded)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for cls in _all_option_classes():
        with contextlib.suppress(argparse.ArgumentError):  # an option registered by two classes
            cls._add_argparse_args(parser)
    return parser


def unknown_beam_args(beam_args: list[str]) -> list[str]:
    """Flags that no Beam options class knows: most likely a typo in a seqpack flag."""
    _, unknown = _beam_parser().parse_known_args(beam_args)
    return [arg for arg in unknown if arg.startswith("-")]


def long_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]


def check_beam_args(beam_args: list[str], seqpack_flags: Iterable[str] = ()) -> None:
    """Refuse the first flag that no Beam option class knows, naming the seqpack or Beam option it most looks like.

    Flags Beam knows (``--runner``, ``--project``, ``--direct_running_mode=in_memory``) pass; only the others are
    reported, so a misspelled ``--max-lenght 128`` fails up front instead of being handed to Beam.
    """
    unknown = unknown_beam_args(beam_args)
    if not unknown:
        return
    flag = unknown[0].split("=", 1)[0]
    hint = closest(flag, [*seqpack_flags, *long_flags(_beam_parser())])
    did_you_mean = f" (did you mean {hint}?)" if hint else ""
    raise UsageError(
        f"unknown option {flag}{did_you_mean}: see `seqpack run --help`; Beam pipeline options pass through"
    )


DASK_RUNNERS = ("DaskRunner", "seqpack.pipeline.dask_runner.DaskRunner")
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner", "PrismRunner")
"""Runners that run the whole job on this machine and hold every shuffled byte in one process (by exact class:
Beam's ``DaskRunner`` subclasses ``BundleBasedDirectRunner``)."""


def resolve_shuffle(shuffle: str, runner: object) -> str:
    """``--shuffle auto`` made concrete for ``runner`` (a Beam runner instance): ``spill`` on a local runner, where
    the runner's shuffle would pass every example through the driver process, ``runner`` on any other (Dataflow,
    Flink, Spark, Dask, portable), where reading a slice of every spill file per bucket grows with the square
    of the data. ``runner`` or ``spill`` are kept as given.

        >>> resolve_shuffle("auto", FnApiRunner())
        'spill'
    """
    if shuffle != "auto":
        return shuffle
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    local = isinstance(runner, FnApiRunner) or type(runner).__name__ in LOCAL_RUNNERS
    return "spill" if local else "runner"


def wants_dask(beam_args: list[str]) -> bool:
    """Whether ``--runner`` names the Dask runner; if so, load it, which also registers the ``--dask_*`` flags.

    Beam knows no short name for its ``DaskRunner``, and the one it ships cannot run seqpack's pipeline (see
    ``seqpack.pipeline.dask_runner``): ``--runner DaskRunner`` means seqpack's.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runner")
    runner = parser.parse_known_args(beam_args)[0].runner
    if runner not in DASK_RUNNERS and not any(arg.startswith("--dask_") for arg in beam_args):
        return False
    try:
        import seqpack.pipeline.dask_runner  # noqa: F401 - registers Beam's DaskOptions
    except ImportError as error:
        raise UsageError(f"--runner {runner}: {error}") from error
    return runner in DASK_RUNNERS


def check_can_leave(beam_args: list[str]) -> None:
    """``--no-wait``: the launcher exits while the job runs, so the job must not run inside it. A Dask cluster
    that seqpack starts itself (no ``--dask_client_address``) would end with the launcher, and its job with it."""
    if wants_dask(beam_args) and not any(arg.startswith("--dask_client_address") for arg in beam_args):
        raise UsageError(
            "--no-wait with --runner DaskRunner needs --dask_client_address of a running cluster (`dask scheduler` "
            "and `dask worker`): a cluster seqpack starts itself ends with the launcher, and the job with it"
        )


def pipeline_options(beam_args: list[str]) -> tuple[PipelineOptions, object | None]:
    """Beam options from the leftover flags; with no ``--runner``, the local multi-process FnApiRunner.

    Beam's default DirectRunner first tries the Prism runner, which downloads a binary; seqpack must run
    offline, so it picks the FnApiRunner itself, with one worker process per core.
    """
    dask = wants_dask(beam_args)
    check_beam_args(beam_args)
    options = RunOptions(beam_args)
    if dask:
        from seqpack.pipeline.dask_runner import DaskRunner

        return options, DaskRunner()
    if options.view_as(StandardOptions).runner is not None:
        return options, None
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    direct = options.view_as(DirectOptions)
    given = " ".join(beam_args)
    if "--direct_running_mode" not in given:
        direct.direct_running_mode = "multi_processing"
    if "--direct_num_workers" not in given and direct.direct_running_mode != "in_memory":
        direct.direct_num_workers = 0  # one worker per core
    return options, FnApiRunner(provision_info=local_provision_info(options))


def local_provision_info(options: PipelineOptions) -> object:
    """What the FnApiRunner tells its worker processes, with the pipeline options in it: Beam leaves them out, so
    a worker's filesystems would not know ``--s3_endpoint_url`` or the credentials and would ask the real cloud.

    The runner's own ``--direct_*`` options stay out: they mean nothing to a worker, and the integers among them
    come back from the protocol as floats (``2.0``) that the worker's option parser refuses."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo

    direct = set(DirectOptions(flags=[]).get_all_options(current_only=True))
    worker = {k: v for k, v in options.get_all_options(drop_default=True).items() if k not in direct}
    return ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(
        retrieval_token="unused-retrieval-token", pipeline_options=PipelineOptions.from_dictionary(worker)
        .to_runner_api()))
