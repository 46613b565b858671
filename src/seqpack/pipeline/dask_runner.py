"""Run seqpack on a Dask cluster: Beam's ``DaskRunner`` with the gaps that break this pipeline closed.

Beam 2.77's ``apache_beam.runners.dask`` turns a pipeline into Dask bags, but for seqpack's graph it

1. puts every output of a multi-output ``ParDo`` into one bag, so the consumers of ``rejected`` and
   ``stats`` also receive the records (it keys bags by producing transform, never by output tag);
2. loses whatever ``DoFn.finish_bundle`` emits (it gathers a bundle's outputs before calling
   ``finish_bundle``), and seqpack's per-bundle statistics are emitted there;
3. computes only the bag of the last transform it visited, so of several sinks (shards, statistics,
   rejected records) only one is written;
4. evaluates a side input with a nested ``compute`` of its whole upstream graph inside every partition
   that reads it (reading and tokenizing the input again, once per partition);
5. treats ``Reshuffle`` as a no-op, so a one-file input stays in one partition, on one worker, all the way
   to the ``GroupByKey``.

``DaskRunner`` here reuses Beam's translation of ``Create``, ``GroupByKey`` and ``Flatten`` and replaces the
rest: every ``ParDo`` bag holds ``(tag, value)`` pairs and each consumer selects its tag; bundles call
``finish_bundle`` before their outputs are gathered; side inputs are computed once and passed to the
partitions as a Dask dependency; ``Reshuffle`` deals every partition's elements round-robin over the
cluster's threads; and the job computes every sink. Only global windows are supported (seqpack is batch).

    seqpack run ... --runner DaskRunner --dask_client_address tcp://scheduler:8786
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunnerResult
from apache_beam.runners.dask.dask_runner import DaskRunner as BeamDaskRunner
from apache_beam.runners.dask.overrides import _Create, _Flatten, _GroupByKeyOnly, _Reshuffle, dask_overrides
from apache_beam.runners.dask.transform_evaluator import Create, Flatten, GroupByKey, get_windowed_value
from apache_beam.transforms.sideinputs import SideInputMap

try:
    import dask
    import dask.bag as db
    import dask.distributed as distributed
    from dask.delayed import Delayed
    from dask.distributed import Client
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError("the Dask runner needs Dask: pip install 'seqpack[dask]'") from error


class _TagReceiver(Receiver):
    """Collects a bundle's outputs of one tag as ``(tag, value)`` pairs in a list shared by all tags."""

    def __init__(self, tag: str | None, values: list[tuple[str | None, Any]]) -> None:
        self.tag = tag
        self.values = values

    def receive(self, windowed_value: Any) -> None:
        self.values.append((self.tag, windowed_value.value))


class _TagReceivers(dict):
    """One receiver per output tag, made on first use (the DoFn names its tags as it emits them)."""

    def __init__(self, values: list[tuple[str | None, Any]]) -> None:
        super().__init__()
        self.values = values

    def __missing__(self, tag: str | None) -> _TagReceiver:
        self[tag] = _TagReceiver(tag, self.values)
        return self[tag]


@dataclasses.dataclass(frozen=True)
class _ParDoSpec:
    """What a partition task needs to run one ``ParDo`` (pickled into the Dask graph once per task)."""

    label: str
    fn: beam.DoFn
    args: tuple
    kwargs: dict
    side_views: tuple[tuple[type, dict], ...]
    """(view class, view options) of each side input, in the order of the transform's side inputs."""


def _run_bundle(items: Iterable[Any], spec: _ParDoSpec, *side_values: list) -> list[tuple[str | None, Any]]:
    """One partition is one bundle: setup, start, process every element, finish, then gather the outputs."""
    values: list[tuple[str | None, Any]] = []
    receivers = _TagReceivers(values)
    side_inputs = [
        SideInputMap(view, options, [get_windowed_value(v, None) for v in side])
        for (view, options), side in zip(spec.side_views, side_values, strict=True)
    ]
    handler = _OutputHandler(
        window_fn=None,
        main_receivers=receivers[None],
        tagged_receivers=receivers,
        per_element_output_counter=None,
        output_batch_converter=None,
        process_yields_batches=False,
        process_batch_yields_elements=False,
    )
    # A fresh copy per bundle, as Beam's own runners make: in-process workers may share one unpickled spec.
    fn = pickler.loads(pickler.dumps(spec.fn))
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn),
        handler,
        context=DoFnContext(spec.label, state=None),
        side_inputs=side_inputs,
        input_args=list(spec.args),
        input_kwargs=spec.kwargs,
        user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
    )
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(get_windowed_value(item, None))
    invoker.invoke_finish_bundle()  # before gathering: seqpack's statistics are emitted here
    invoker.invoke_teardown()
    return values


def _concat(parts: Sequence[list]) -> list:
    return [value for part in parts for value in part]


def _deal(part: Iterable[Any], ways: int) -> tuple[list, ...]:
    """Deal a partition's elements round-robin into ``ways`` lists (deterministic, unlike a random shuffle)."""
    hands: tuple[list, ...] = tuple([] for _ in range(ways))
    for index, value in enumerate(part):
        hands[index % ways].append(value)
    return hands


def _reshuffle(bag: db.Bag, ways: int) -> db.Bag:
    """Spread every partition over ``ways`` new ones, so that one large partition feeds every worker."""
    hands = [dask.delayed(_deal, nout=ways, pure=True)(part, ways) for part in bag.to_delayed(optimize_graph=False)]
    return db.from_delayed([dask.delayed(_concat, pure=True)([hand[i] for hand in hands]) for i in range(ways)])


def _has_tag(tag: str | None):  # noqa: ANN202 - a small predicate factory
    return lambda pair: pair[0] == tag


def _value(pair: tuple[str | None, Any]) -> Any:
    return pair[1]


class _BagVisitor(PipelineVisitor):
    """Builds one Dask bag per primitive transform, wiring each input to its producer's output tag."""

    def __init__(self, *, bag_kwargs: dict, ways: int) -> None:
        self.bag_kwargs = bag_kwargs
        self.ways = ways
        self.bags: dict[AppliedPTransform, db.Bag] = {}
        self.consumed: set[AppliedPTransform] = set()

    def _input_bag(self, pcoll: pvalue.PCollection) -> db.Bag:
        producer = pcoll.producer
        self.consumed.add(producer)
        bag = self.bags[producer]
        if type(producer.transform) is not beam.ParDo:
            return bag
        tag = next(tag for tag, output in producer.outputs.items() if output is pcoll)
        return bag.filter(_has_tag(tag)).map(_value)

    def _side_input(self, side: pvalue.AsSideInput) -> Delayed:
        """The whole side input as one Dask value: computed once, then handed to every partition.

        As a ``Delayed`` of the unoptimized graph: a bag ``Item`` passed to ``map_partitions`` is optimized on its
        own, which fuses its upstream tasks under new names, so everything upstream of a side input (tokenizing,
        reading) would run once more for it."""
        return self._input_bag(side.pvalue).reduction(list, _concat).to_delayed(optimize_graph=False)

    def visit_transform(self, node: AppliedPTransform) -> None:
        inputs = [self._input_bag(pcoll) for pcoll in node.inputs if not isinstance(pcoll, pvalue.PBegin)]
        transform = node.transform
        kind = type(transform)
        if kind is _Create:
            bag = Create(node, bag_kwargs=self.bag_kwargs).apply(None)
        elif kind is beam.ParDo:
            bag = self._par_do(node, inputs[0])
        elif kind is _GroupByKeyOnly:
            bag = GroupByKey(node).apply(inputs[0])
        elif kind is _Flatten:
            bag = Flatten(node).apply(inputs) if inputs else db.from_sequence([], npartitions=1)
        elif kind is _Reshuffle:
            bag = _reshuffle(inputs[0], self.ways)
        elif len(inputs) == 1:  # windowing steps of the global window: nothing to do in batch
            bag = inputs[0]
        else:
            raise NotImplementedError(f"seqpack's DaskRunner cannot run {node.full_label} ({kind.__name__})")
        self.bags[node] = bag

    def _par_do(self, node: AppliedPTransform, bag: db.Bag) -> db.Bag:
        transform = node.transform
        args, kwargs = transform.raw_side_inputs
        sides = list(node.side_inputs)
        spec = _ParDoSpec(
            label=transform.label,
            fn=transform.fn,
            args=tuple(args),
            kwargs=dict(kwargs),
            side_views=tuple((type(side), side._view_options()) for side in sides),
        )
        return bag.map_partitions(_run_bundle, spec, *[self._side_input(side) for side in sides])

    def sinks(self) -> list[db.Bag]:
        """The bags nothing else reads: computing all of them runs every branch of the pipeline."""
        return [bag for node, bag in self.bags.items() if node not in self.consumed]


class DaskRunner(BeamDaskRunner):
    """Executes a (batch, globally windowed) pipeline on a ``dask.distributed`` cluster.

    Options are Beam's ``DaskOptions``: ``--dask_client_address`` (default: a new local cluster),
    ``--dask_npartitions`` (partitions after each ``Reshuffle``; default the cluster's thread count).
    """

    def run_pipeline(self, pipeline: beam.Pipeline, options: PipelineOptions) -> _Result:
        dask_options = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        client = Client(**dask_options)
        # More partitions than threads balance skew better but cost tasks: every GroupByKey is an all-to-all.
        ways = bag_kwargs.get("npartitions") or max(1, sum(client.nthreads().values()))
        pipeline.replace_all(dask_overrides())
        visitor = _BagVisitor(bag_kwargs=bag_kwargs, ways=ways)
        pipeline.visit(visitor)
        # Only a count comes back from each sink: the data stays where the workers wrote it.
        futures = client.compute([sink.count() for sink in visitor.sinks()])
        return _Result(client, futures)


class _Result(DaskRunnerResult):
    """Beam's result, which also closes the client it opened once the job is over."""

    def detach(self) -> None:
        """Leave the job to the cluster (``seqpack run --no-wait``): its tasks go on after this client has gone."""
        distributed.fire_and_forget(self.futures)
        self.client.close()

    def wait_until_finish(self, duration: float | None = None) -> str:
        try:
            return super().wait_until_finish(duration)
        finally:
            self.client.close()

