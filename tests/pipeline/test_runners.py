"""The local runner's worker processes get the run's Beam options, without the launcher-only ``--direct_*`` ones."""

from __future__ import annotations

from apache_beam.runners.worker.sdk_worker_main import _load_pipeline_options
from google.protobuf import json_format

from seqpack.pipeline.runners import pipeline_options


def test_the_local_runners_workers_are_given_the_runs_options() -> None:
    _, runner = pipeline_options(["--s3_endpoint_url=http://127.0.0.1:9", "--s3_region_name=us-east-1",
                                  "--direct_num_workers=2"])
    given = runner._provision_info.provision_info.pipeline_options
    # what a worker process reads (sdk_worker_main), from the JSON the runner puts in its environment
    loaded = _load_pipeline_options(json_format.MessageToJson(given))
    assert loaded["s3_endpoint_url"] == "http://127.0.0.1:9" and loaded["s3_region_name"] == "us-east-1"
    assert not any(name.startswith("direct_") for name in loaded), "a worker refuses --direct_num_workers=2.0"


def test_the_runs_options_make_each_view_once_and_views_share_their_values() -> None:
    import copy
    import pickle

    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions, TypeOptions

    from seqpack.pipeline.runners import RunOptions

    options, _ = pipeline_options(["--direct_num_workers=3"])
    assert isinstance(options, RunOptions)
    assert options.view_as(TypeOptions) is options.view_as(TypeOptions)
    options.view_as(DirectOptions).direct_num_workers = 5
    assert options.get_all_options()["direct_num_workers"] == 5
    assert options.view_as(DirectOptions).direct_num_workers == 5

    for copied in (copy.deepcopy(options), pickle.loads(pickle.dumps(options))):  # Beam copies a pipeline's options
        assert type(copied) is RunOptions and copied.get_all_options() == options.get_all_options()
        copied.view_as(StandardOptions).runner = "elsewhere"
        assert copied.view_as(StandardOptions).runner == "elsewhere"
        assert options.view_as(StandardOptions).runner != "elsewhere", "a copy's views are its own"
