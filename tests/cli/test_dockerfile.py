"""The Dataflow image and its Flex Template, checked line by line without Docker (no engine on our machines).

- the SDK image is the Beam version pyproject.toml pins, and every Python version agrees;
- every COPY source exists and passes .dockerignore; the entrypoint, launcher binary and Flex file are set;
- with ``SEQPACK_DOCKER_TESTS=1`` (they need the package index, and minutes: too slow for every CI run), the
  install resolves with ``pip install --dry-run`` (pinned Beam, no torch), and the RUN steps themselves run,
  verbatim, in a fresh virtualenv standing in for the SDK image;
- the Flex Template's metadata.json lists every ``seqpack run`` option, with validation rules that match the
  code, and the template entry point turns parameters into a job the local runner can run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from seqpack.cli.flex import run_options, to_run_argv

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
METADATA = REPO / "templates" / "flex" / "metadata.json"
NOT_TEMPLATE_PARAMETERS = {"report", "quiet", "no_wait", "rebuild", "source"}
"""`seqpack run` options a Flex Template does not offer: --report needs matplotlib, which the image lacks; the
template says `wait=true` or `wait=false` (its default) rather than `no_wait`, and `overwrite` rather than its
alias `rebuild`; a mixture's sources (whose `--source` values hold commas) go in the `config` job file."""


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped; ``stage`` counts FROM lines."""
    instructions, pending, stage = [], "", -1
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        pending = ""
        stage += keyword.upper() == "FROM"
        instructions.append(Instruction(keyword.upper(), " ".join(arguments.split()), stage))
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((REPO / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def final(dockerfile: list[Instruction]) -> list[Instruction]:
    """The instructions of the image that is built (the last stage)."""
    return [i for i in dockerfile if i.stage == dockerfile[-1].stage]


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def beam_pin(project: dict) -> str:
    [pin] = [d.split("==")[1] for d in project["dependencies"] if re.match(r"apache-beam\s*==", d)]
    return pin


def one(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the image's stage, found {len(found)}"
    return found[0]


def test_the_sdk_image_is_the_beam_version_pyproject_pins(final: list[Instruction], project: dict) -> None:
    image = one(final, "FROM").arguments
    pin = beam_pin(project)
    assert image == f"apache/beam_python3.11_sdk:{pin}", f"Dockerfile FROM {image}, pyproject pins {pin}"
    extras = [d for deps in project["optional-dependencies"].values() for d in deps if d.startswith("apache-beam")]
    assert extras and all(d.endswith(f"=={pin}") for d in extras), extras


def test_python_versions_agree(dockerfile: list[Instruction], project: dict) -> None:
    images = " ".join(i.arguments for i in dockerfile if i.keyword == "FROM")
    assert "python3.11_sdk" in images and "python311-template-launcher" in images, images
    minimum = re.fullmatch(r">=\s*3\.(\d+)", project["requires-python"])
    assert minimum and int(minimum.group(1)) <= 11, project["requires-python"]


def test_entrypoint_launcher_and_flex_file(dockerfile: list[Instruction], final: list[Instruction]) -> None:
    assert json.loads(one(final, "ENTRYPOINT").arguments) == ["/opt/apache/beam/boot"]
    [launcher_stage] = [i for i in dockerfile if i.keyword == "FROM" and i.stage < final[0].stage]
    assert launcher_stage.arguments.endswith(" AS launcher")
    copied = [i.arguments.split() for i in final if i.keyword == "COPY" and i.arguments.startswith("--from=")]
    assert ["--from=launcher", *["/opt/google/dataflow/python_template_launcher"] * 2] in copied
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(i.arguments for i in final if i.keyword == "ENV")))
    assert image_path_in_repo(final, env["FLEX_TEMPLATE_PYTHON_PY_FILE"]) == REPO / "templates" / "flex" / "main.py"


def image_path_in_repo(final: list[Instruction], path: str) -> Path:
    """Which repository file an absolute path in the image comes from, following WORKDIR and COPY."""
    workdir = one(final, "WORKDIR").arguments.rstrip("/")
    for instruction in final:
        if instruction.keyword != "COPY" or instruction.arguments.startswith("--from="):
            continue
        *sources, destination = instruction.arguments.split()
        target = destination if destination.startswith("/") else f"{workdir}/{destination.removeprefix('./')}"
        for source in sources:
            copied = target.rstrip("/") + ("/" + Path(source).name if destination.endswith("/") else "")
            if path == copied or path.startswith(copied + "/"):
                return REPO / source / path[len(copied) :].lstrip("/")
    pytest.fail(f"{path} is not copied into the image")


def test_copied_sources_exist_and_pass_dockerignore(final: list[Instruction]) -> None:
    patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert patterns[0] == "*", ".dockerignore starts by excluding everything, then lets each COPY source in"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for instruction in final:
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from="):
            for source in instruction.arguments.split()[:-1]:
                assert (REPO / source).exists(), source
                assert source.rstrip("/") in allowed, f"{source} is not let through by .dockerignore"


def install_steps(final: list[Instruction]) -> list[str]:
    return [i.arguments for i in final if i.keyword == "RUN"]


def test_install_steps_install_seqpack_then_check(final: list[Instruction]) -> None:
    steps = install_steps(final)
    install = [s for s in steps if 'pip install' in s]
    assert len(install) == 1 and '".[gcp]"' in install[0], install
    assert "--constraint" in install[0], "the SDK image's own packages must keep their versions"
    assert steps.index(install[0]) < steps.index("pip check"), "pip check runs after the install"
    assert "torch" not in " ".join(steps), "workers do not need torch"


SLOW = pytest.mark.skipif(
    os.environ.get("SEQPACK_DOCKER_TESTS") != "1",
    reason="needs the package index and minutes (dry-run resolve: 15 s to 3 min; replay: ~2 min, ~1 GB): "
    "set SEQPACK_DOCKER_TESTS=1",
)


@SLOW
def test_the_install_resolves_without_conflicts(tmp_path: Path, project: dict) -> None:
    """What the image installs resolves on this Python, with the pinned Beam and without torch."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), ".[gcp]"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    resolved = {p["metadata"]["name"].lower(): p["metadata"]["version"] for p in installs}
    assert resolved["apache-beam"] == beam_pin(project)
    assert "torch" not in resolved and "seqpack" in resolved


@SLOW
def test_replay_the_run_steps_in_a_fresh_venv(tmp_path: Path, final: list[Instruction], project: dict) -> None:
    """FROM: a venv with the SDK image's Beam; COPY: the same files; RUN: the same commands, verbatim."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    subprocess.run(["pip", "install", "--quiet", f"apache-beam[gcp]=={beam_pin(project)}"], env=env, check=True)
    workdir = tmp_path / "opt-seqpack"
    workdir.mkdir()
    for instruction in final:
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from="):
            *sources, destination = instruction.arguments.split()
            for source in sources:
                target = workdir / destination / (Path(source).name if destination.endswith("/") else "")
                copy = shutil.copytree if (REPO / source).is_dir() else shutil.copy
                copy(REPO / source, target)
    for step in install_steps(final):
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", step], cwd=workdir, env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, f"RUN {step}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    flex = subprocess.run(["python", str(workdir / "templates/flex/main.py"), "--output=gs://b/o"], env=env,
                          capture_output=True, text=True, cwd=tmp_path)
    assert flex.returncode == 2 and "--input is required" in flex.stderr, flex.stderr
    probe = "import importlib.util as u, seqpack; print(u.find_spec('torch') is None)"
    assert subprocess.run(["python", "-c", probe], env=env, capture_output=True, text=True).stdout.strip() == "True"


@pytest.fixture(scope="module")
def metadata() -> dict:
    return json.loads(METADATA.read_text())


def test_metadata_lists_every_run_option(metadata: dict) -> None:
    names = [p["name"] for p in metadata["parameters"]]
    assert len(names) == len(set(names))
    expected = {name.replace("-", "_") for name in run_options()} - NOT_TEMPLATE_PARAMETERS
    assert set(names) == expected, (
        f"missing from {METADATA.name}: {sorted(expected - set(names))}; unknown: {sorted(set(names) - expected)}"
    )
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in names)


def test_metadata_validation_matches_the_code(metadata: dict) -> None:
    import argparse

    from seqpack.cli.flags import add_run_arguments

    parser = argparse.ArgumentParser(add_help=False)
    add_run_arguments(parser)
    actions = {a.option_strings[0][2:].replace("-", "_"): a for a in parser._actions if a.option_strings[0] != "-h"}
    for parameter in metadata["parameters"]:
        assert parameter["isOptional"] is True, "the job file may give any of them; seqpack checks at launch"
        action = actions.get(parameter["name"])
        regexes = [re.compile(r) for r in parameter.get("regexes", [])]
        if action is None:  # config
            continue
        if action.nargs == 0:
            assert [r.pattern for r in regexes] == ["^(true|false)$"], parameter["name"]
        elif action.choices:
            [rule] = regexes
            assert all(rule.fullmatch(c) for c in action.choices) and not rule.fullmatch("other"), parameter["name"]
        elif action.type is int:
            assert regexes and all(r.fullmatch(str(action.default or 7)) for r in regexes), parameter["name"]


def test_template_parameters_become_run_flags() -> None:
    assert to_run_argv([
        "--input=gs://b/a/*.jsonl, gs://b/c.parquet", "--max_length=512", "--overwrite=true", "--no_eos=false",
        "--add_special_tokens=[SEP],[CLS]", "--role_map=human=user,bot=assistant", "--project=p",
        "--sdk_container_image=europe-docker.pkg.dev/p/r/seqpack:1",
    ]) == [
        "--input=gs://b/a/*.jsonl", "--input=gs://b/c.parquet", "--max-length=512", "--overwrite",
        "--add-special-tokens", "[SEP]", "[CLS]", "--role-map=human=user,bot=assistant", "--project=p",
        "--sdk_container_image=europe-docker.pkg.dev/p/r/seqpack:1", "--no-wait", "--runner=DataflowRunner",
    ]
    assert to_run_argv(["--runner=PortableRunner"]) == ["--runner=PortableRunner", "--no-wait"]
    assert to_run_argv(["--wait=true", "--runner=PortableRunner"]) == ["--wait", "--runner=PortableRunner"]
    assert to_run_argv(["--wait=false"]) == ["--no-wait", "--runner=DataflowRunner"]


def test_a_bad_switch_value_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from seqpack.cli.flex import main

    assert main(["--overwrite=yes"]) == 2
    assert "overwrite is a switch" in capsys.readouterr().err


def test_the_template_entry_point_runs_a_job(tmp_path: Path, tokenizer_dir: Path, pairs: list[dict]) -> None:
    """As the launcher does: the Flex file, run as a script, with template-style parameters."""
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(REPO / "templates" / "flex" / "main.py"), f"--input={data}", f"--output={out}",
         f"--tokenizer={tokenizer_dir}", "--max_length=128", "--bucket_tokens=4096", "--no_eos=false",
         "--quiet=true", "--runner=FnApiRunner", "--direct_running_mode=in_memory"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert (config["max_length"], config["bucket_tokens"], config["add_eos"]) == (128, 4096, True)
