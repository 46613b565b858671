"""The job seqpack submits to Dataflow, built offline with Beam's ``--dry_run`` (no project, no credentials).

It needs the ``gcp`` extra (``pip install 'seqpack[gcp]'``: ~80 packages, so CI skips it); with it, Beam's
DataflowRunner translates the pipeline into the Runner v2 job it would submit, and stops there. The job ends
with its own commit step, so a launcher that leaves (``--no-wait``, the Flex Template) still commits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="needs the gcp extra: seqpack[gcp]")

import apache_beam as beam  # noqa: E402
from apache_beam.internal import pickler  # noqa: E402
from apache_beam.portability import common_urns  # noqa: E402
from apache_beam.portability.api import beam_runner_api_pb2  # noqa: E402

from seqpack.config import RunConfig  # noqa: E402
from seqpack.pipeline.build import build_pipeline  # noqa: E402
from seqpack.pipeline.commit import Destination  # noqa: E402
from seqpack.pipeline.commit_step import CommitDoFn, CommitPlan  # noqa: E402
from seqpack.pipeline.runners import pipeline_options  # noqa: E402
from seqpack.tokenizer import describe, load_tokenizer, pad_id_of  # noqa: E402
from seqpack.transforms.read import resolve_inputs  # noqa: E402

IMAGE = "europe-west4-docker.pkg.dev/seqpack-test/seqpack/seqpack:test"
DATAFLOW_ARGS = [
    "--runner=DataflowRunner", "--project=seqpack-test", "--region=europe-west4",
    "--temp_location=gs://seqpack-test/tmp", "--staging_location=gs://seqpack-test/staging",
    f"--sdk_container_image={IMAGE}", "--sdk_location=container", "--experiments=use_runner_v2",
    "--dry_run=True", "--no_auth",
]


def test_the_dataflow_job_builds_offline_with_the_custom_container(
    tmp_path: Path, tokenizer_dir: Path, pairs: list[dict[str, str]]
) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    config = RunConfig(inputs=[str(data)], output="gs://seqpack-test/out", tokenizer=str(tokenizer_dir))
    options, runner = pipeline_options(DATAFLOW_ARGS)
    pipeline = beam.Pipeline(runner=runner, options=options)
    tokenizer = load_tokenizer(config.tokenizer)
    pad_id = pad_id_of(tokenizer)
    plan = CommitPlan(config=config, tokenizer=describe(tokenizer, config.tokenizer, pad_id, []),
                      destination=Destination(output=config.output, revision=1, previous=None),
                      lock_token="the-launchers-token", release_lock=True)
    build_pipeline(pipeline, config, resolve_inputs(config.inputs), plan=plan, pad_id=pad_id, found=[])
    result = pipeline.run()  # --dry_run: translated, validated, not submitted

    job = result.job.proto_pipeline
    environments = list(job.components.environments.values())
    assert environments and all(env.urn == common_urns.environments.DOCKER.urn for env in environments)
    images = {beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image for env in environments}
    assert images == {IMAGE}, "every step runs in the seqpack image"
    steps = {t.unique_name.split("/")[0] for t in job.components.transforms.values()}
    assert {"ReadRecords", "Tokenize", "ShuffleAndPack", "WriteShards", "MergeStats", "ListShards", "HashInputs",
            "Commit"} <= steps
    commit = next(t for t in job.components.transforms.values() if t.unique_name == "Commit")
    payload = beam_runner_api_pb2.ParDoPayload.FromString(commit.spec.payload)
    sides = sorted(payload.side_inputs)
    assert set(commit.inputs) == {"None", *sides} and len(sides) == 2, \
        "the merged statistics; the shard list and the consumed inputs as side inputs"
    producers = {
        t.unique_name.split("/")[0] for t in job.components.transforms.values() for side in sides
        if commit.inputs[side] in t.outputs.values() and not t.subtransforms
    }
    assert producers == {"ListShards", "ListConsumed"}, producers
    do_fn = pickler.loads(payload.do_fn.payload)[0]  # (DoFn, args, kwargs, ...) as the workers unpickle it
    assert isinstance(do_fn, CommitDoFn) and do_fn.plan == plan, "the job commits with the launcher's plan"
