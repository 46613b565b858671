"""README.md as a new user meets it: every command it shows runs, on the demo data, offline, as written.

The commands are read from the README itself (```bash blocks, `$ ` prompts, inline `seqpack ...` spans), so an
example added or changed there is run here. Each runs in a fresh directory that holds the names the README uses
(``FIXTURES``), after the few textual substitutions in ``PLACEHOLDERS``; what cannot run offline is in ``SKIPPED``
with the reason. The set-up commands (venv, pip install) are not run: they must be the ones CI runs.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from seqpack.cli.main import _parser
from seqpack.demo import demo_pairs_path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI_SCRIPT = ROOT / ".ci" / "run"
VENV_BIN = ".venv/bin/"  # the README's commands name the venv's programs; here they are on PATH
IN_PROCESS = "--direct_running_mode=in_memory"  # every `seqpack run` here: no worker processes, a quick test

PLACEHOLDERS = {  # what the README writes → what it is in the directory the command runs in
    "seqpack run ...": "seqpack run -i pairs.jsonl -o out -t tokenizer/",
    "path/to/hf-tokenizer-dir": "tokenizer/",
    "OUT": "out",
}
SKIPPED = {  # a command, as the README writes it → why it is not run here
    "pip install 'seqpack[report]'": "installs a package (matplotlib): needs the network",
    "seqpack run --report": "a flag named in a sentence, not a whole command",
    "seqpack run": "the command named in a sentence",
    "--runner DataflowRunner --project P --region R --temp_location gs://...":
        "runs on Dataflow: needs a Google Cloud project and gs:// "
        "(tests/pipeline/test_dataflow.py checks the job offline)",
}
SET_UP = "the set-up (venv, pip install): compared with .ci/run's commands instead (test_set_up_is_what_ci_runs)"


def split_readme() -> tuple[list[tuple[str, str]], str]:
    """The README's ``` blocks as (language, text), and the prose outside them."""
    blocks, prose, current, opened = [], [], [], None
    for line in README.splitlines():
        if line.startswith("```"):
            if opened is None:
                opened, current = line[3:].strip(), []
            else:
                blocks.append((opened, "\n".join(current) + "\n"))
                opened = None
        elif opened is None:
            prose.append(line)
        else:
            current.append(line)
    return blocks, "\n".join(prose)


def fenced(language: str) -> list[str]:
    """The text of the README's ``` blocks of ``language`` ("" for plain ones)."""
    return [text for opened, text in split_readme()[0] if opened == language]


def bash_commands() -> list[str]:
    """The ```bash blocks' commands, a backslash-continued command as one line."""
    return [line.strip() for block in fenced("bash") for line in block.replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def prompt_commands() -> list[tuple[str, list[str]]]:
    """The `$ ` commands in the README's plain ``` blocks, each with the output shown under it."""
    found = []
    for block in fenced(""):
        lines = block.splitlines()
        for n, line in enumerate(lines):
            if line.startswith("$ "):
                shown = list(lines[n + 1 :])
                shown = shown[: next((i for i, rest in enumerate(shown) if rest.startswith("$ ")), len(shown))]
                found.append((line[2:], shown))
    return found


def inline_commands() -> list[str]:
    """Commands written inline in the prose: `seqpack verify out/`, `pip install ...`, `--runner ...` flags."""
    spans = re.findall(r"`([^`\n]+)`", split_readme()[1])
    command = r"(seqpack (run|demo|verify|inspect|audit|report|stats|status)\b|pip |python |--runner )"
    return [span for span in spans if re.match(command, span)]


IN_ORDER = "## Growing datasets"
"""A README section whose `$ ` commands build on each other: run in order, in one directory, by
test_growing_datasets_transcript_runs_in_order (not one by one in fresh directories)."""


def transcript(title: str) -> list[tuple[str, list[str]]]:
    """The `$ ` commands of one section's plain ``` blocks, each with the output shown under it."""
    section = README.split(title + "\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for block in re.findall(r"^```\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE):
        lines = block.splitlines()
        for n, line in enumerate(lines):
            if line.startswith("$ "):
                shown = lines[n + 1 :]
                shown = shown[: next((i for i, rest in enumerate(shown) if rest.startswith("$ ")), len(shown))]
                found.append((line[2:], shown))
    return found


def skip_reason(command: str) -> str | None:
    if command in dict(transcript(IN_ORDER)):
        return f"run in order, in one directory, with the other commands of {IN_ORDER!r}"
    return SET_UP if command in bash_commands()[:2] else SKIPPED.get(command)


def runnable(command: str) -> str:
    """The command as it runs here: placeholders replaced, the venv's programs from PATH, the Beam jobs (`seqpack
    run`, `seqpack compact`) in process."""
    for written, here in PLACEHOLDERS.items():
        command = re.sub(rf"(?<![\w/.-]){re.escape(written)}(?![\w-])", here, command)
    command = command.replace(VENV_BIN, "")
    return re.sub(r"\bseqpack (run|compact)\b", rf"seqpack \1 {IN_PROCESS}", command)


# ---------------------------------------------------------------------------------------------- the fixtures


def alpaca_records() -> list[dict[str, str]]:
    """The demo pairs as Alpaca records, for the README's `--template alpaca` example over `data/*.jsonl`."""
    pairs = [json.loads(line) for line in demo_pairs_path().read_text(encoding="utf-8").splitlines()]
    return [{"instruction": "Translate to French.", "input": p["source"], "output": p["target"]} for p in pairs]


def chat_records() -> list[dict]:
    """The demo pairs as conversations, for the README's mixture's `chats/*.jsonl`."""
    pairs = [json.loads(line) for line in demo_pairs_path().read_text(encoding="utf-8").splitlines()]
    return [{"messages": [{"role": "user", "content": p["source"]}, {"role": "assistant", "content": p["target"]}]}
            for p in pairs[:100]]


MIXTURE_TOKENIZER = "Qwen/Qwen2.5-0.5B-Instruct"
"""The README's mixture names a hub tokenizer; here it is the demo's, with a ChatML template for its chat source."""
CHATML = ("{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{%- endfor %}")


def chat_tokenizer_in(home: Path) -> Path:
    """The demo tokenizer with a chat template, made once in ``home``."""
    made = home / "chat-tokenizer"
    if not made.exists():
        from helpers import chat_tokenizer

        chat_tokenizer(home / "seqpack-demo" / "tokenizer", made, CHATML)
    return made


def mixture_job(where: Path, home: Path) -> None:
    """The README's mixture job file (its ```yaml block), with a tokenizer that is here."""
    (job,) = [text for text in fenced("yaml") if text.startswith("# mixture.yaml")]
    assert MIXTURE_TOKENIZER in job, "the README's mixture names another tokenizer: update MIXTURE_TOKENIZER"
    where.write_text(job.replace(MIXTURE_TOKENIZER, str(chat_tokenizer_in(home))), encoding="utf-8")


def demo_command() -> str:
    """The README's first command ends by running the demo; it is run here as written, in the fixture."""
    return bash_commands()[0].split("&&")[-1].strip().replace(VENV_BIN, "")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where `seqpack demo` ran once, with its default output directory, shared by every test here."""
    home = tmp_path_factory.mktemp("readme-home")
    result = shell(demo_command(), home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "seqpack-demo/dataset", result.stdout
    return home


FIXTURES: dict[str, Callable[[Path, Path], None]] = {  # a name the README uses → how the test makes it
    "seqpack-demo": lambda where, home: where.symlink_to(home / "seqpack-demo"),
    "tokenizer": lambda where, home: where.symlink_to(home / "seqpack-demo" / "tokenizer"),
    "pairs.jsonl": lambda where, home: shutil.copy(demo_pairs_path(), where),
    "data": lambda where, home: (where.mkdir(), (where / "alpaca.jsonl").write_text(
        "".join(json.dumps(record) + "\n" for record in alpaca_records()), encoding="utf-8")),
    "out": lambda where, home: where.symlink_to(home / "seqpack-demo" / "dataset"),  # a dataset to read
    "chats": lambda where, home: (where.mkdir(), (where / "chats.jsonl").write_text(
        "".join(json.dumps(record) + "\n" for record in chat_records()), encoding="utf-8")),
    "mixture.yaml": mixture_job,
}


def workspace(tmp_path: Path, home: Path, command: str) -> Path:
    """A fresh directory with the names of ``FIXTURES``; a `seqpack run` writes `out` itself."""
    for name, make in FIXTURES.items():
        if not (name == "out" and command.startswith("seqpack run")):
            make(tmp_path / name, home)
    return tmp_path


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PATH": path, "COLUMNS": "120"}, timeout=600)


# ---------------------------------------------------------------------------------------------- the commands


def every_command() -> list[str]:
    """Each command once, in the README's order by kind: ```bash blocks, `$ ` prompts, inline spans."""
    return list(dict.fromkeys([*bash_commands(), *(command for command, _ in prompt_commands()), *inline_commands()]))


def test_the_readme_commands_are_found_and_the_skip_list_is_current() -> None:
    commands = every_command()
    assert len(bash_commands()) >= 4 and len(prompt_commands()) >= 2 and "seqpack verify out/" in commands
    stale = set(SKIPPED) - set(commands)
    assert not stale, f"SKIPPED lists commands the README no longer shows: {stale}"


def output_of(command: str) -> str:
    argv = shlex.split(command)
    flag = next(i for i, word in enumerate(argv) if word in ("-o", "--output"))
    return argv[flag + 1].rstrip("/")


SHOWN = dict(prompt_commands())


@pytest.mark.parametrize("command", every_command(), ids=[c[:60] for c in every_command()])
def test_readme_command_runs(command: str, home: Path, tmp_path: Path) -> None:
    reason = skip_reason(command)
    if reason:
        pytest.skip(reason)
    result = shell(runnable(command), workspace(tmp_path, home, command))
    assert result.returncode == 0, f"{runnable(command)}\n{result.stderr[-3000:]}"
    if command.startswith("seqpack run"):
        output = output_of(runnable(command))
        assert (tmp_path / output / "manifest.json").is_file(), result.stderr
        assert f"seqpack: wrote {output}\n" in result.stderr
    if command in SHOWN:
        check_shown_output(command, SHOWN[command], result.stdout + result.stderr)


def shape(line: str) -> str:
    """A line with its numbers and example texts left out: what must not differ between corpora and versions."""
    line = re.sub(r"⟦<s>[^⟧]*⟧[^⟦]*</s>", "⟦<s>…⟧…</s>", line)
    return re.sub(r"\d+(?:[.,]\d+)*", "N", line).rstrip()


def is_progress(line: str) -> bool:
    return re.match(r"seqpack: \d+:\d\d ", line) is not None  # printed every few seconds: timing-dependent


def check_shown_output(command: str, shown: list[str], output: str) -> None:
    """The README's sample output looks like the real one: the same lines, numbers and example texts aside.

    `seqpack run`'s sample is of a 250,000-pair corpus: only its summary's kinds of lines are compared, in order.
    """
    real = output.splitlines()
    if command.startswith("seqpack run"):
        def kinds(lines: list[str]) -> list[str]:
            return [shape(line).split()[0] for line in lines if line.strip() and not is_progress(line)]

        assert kinds(shown) == kinds(real), f"README shows:\n{chr(10).join(shown)}\nreal:\n{output}"
        assert shown[-1] in real, "the summary's last line names the command to look at the data"
    else:
        assert [shape(line) for line in shown] == [shape(line) for line in real], (
            f"README shows:\n{chr(10).join(shown)}\nreal:\n{output}")


def test_growing_datasets_transcript_runs_in_order(home: Path, tmp_path: Path) -> None:
    """The Growing datasets transcript, one command after the other in one directory: each exits as shown (2 for
    a "seqpack: error:", else 0) and prints what the README shows."""
    steps = transcript(IN_ORDER)
    assert len(steps) >= 6 and any("--append" in command for command, _ in steps), "the transcript is gone"
    where = workspace(tmp_path, home, "seqpack run")
    for command, shown in steps:
        result = shell(runnable(command), where)
        refused = any(line.startswith("seqpack: error:") for line in shown)
        assert result.returncode == (2 if refused else 0), f"{runnable(command)}\n{result.stderr[-3000:]}"
        real = [line for line in (result.stdout + result.stderr).splitlines() if not is_progress(line)]
        if shown:
            assert shape(real[0]) == shape(shown[0]), f"{command}: README shows {shown[0]!r}, real {real[0]!r}"
            check_shown_output(command, shown, "\n".join(real))


def test_the_custom_template_example_means_newlines(tmp_path: Path) -> None:
    """The Input styles example, typed in a shell, gives a template with real newlines (not backslash-n)."""
    from seqpack.cli.flags import config_from_args
    from seqpack.prompt_templates import make_template

    example = re.search(r"`(--template '[^`]*\{target\}')`", README)
    assert example, "the README's custom-template example is gone"
    args = _parser().parse_args(["run", "-i", "a", "-o", "o", "-t", "t", *shlex.split(example.group(1))])
    template = make_template(config_from_args(args).template)
    source, target = template.render({"question": "Who?", "source": "The cat eats.", "target": "Le chat."})
    assert source == "Q: Who?\nContext: The cat eats.\nA: " and target == "Le chat."


# ---------------------------------------------------------------------------------------------- set-up and tests


def steps(command: str) -> list[list[str]]:
    """A shell command line as its steps, each as argv, with pip's `--quiet` spelt `-q` as the README does."""
    return [["-q" if word == "--quiet" else word for word in shlex.split(step)] for step in command.split("&&")]


def ci_steps() -> list[list[str]]:
    lines = [line.strip() for line in CI_SCRIPT.read_text(encoding="utf-8").splitlines()]
    commands = [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]
    return [step for line in commands for step in steps(line)]


CI_ONLY = [[".venv/bin/pip", "install", "-q", "--upgrade", "pip"]]  # CI also upgrades pip first: a newer resolver
PYTEST_CI_ONLY = ["-p", "no:cacheprovider"]  # CI leaves no .pytest_cache in the checkout


def test_set_up_is_what_ci_runs() -> None:
    """The two commands at the top install exactly as .ci/run does, then run the demo, or the tests as CI does."""
    install, test = bash_commands()[:2]
    ci = ci_steps()
    ci_install = [step for step in ci if "pip" in step[0] or step[:2] == ["python3", "-m"]]
    *readme_install, demo = steps(install)
    assert readme_install == [step for step in ci_install if step not in CI_ONLY]
    assert demo == [VENV_BIN + "seqpack", "demo"]
    *test_install, pytest_step = steps(test)
    assert test_install == readme_install
    ci_pytest = next(step for step in ci if step[1:3] == ["-m", "pytest"])
    flags = [word for word in ci_pytest if word not in PYTEST_CI_ONLY]
    assert flags == pytest_step, f"the README runs {pytest_step}, CI runs {ci_pytest}"


@pytest.mark.parametrize("source", ["README", ".ci/run"])
def test_the_test_command_prints_the_summary_line(source: str, tmp_path: Path) -> None:
    """`pytest -q` on top of the project's own options must still end with "N passed, M skipped"."""
    if source == "README":
        argv = steps(bash_commands()[1])[-1]
    else:
        argv = next(step for step in ci_steps() if step[1:3] == ["-m", "pytest"])
    (tmp_path / "test_tiny.py").write_text(
        "import pytest\n\ndef test_one():\n    pass\n\n@pytest.mark.skip(reason='r')\ndef test_two():\n    pass\n")
    flags = [word for word in argv[3:] if word != "tests"]
    result = subprocess.run([sys.executable, "-m", "pytest", *flags, "-c", str(ROOT / "pyproject.toml"),
                             "--rootdir", str(tmp_path), str(tmp_path / "test_tiny.py")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^1 passed, 1 skipped in ", result.stdout, flags=re.MULTILINE), result.stdout


def test_the_demo_output_is_ignored_by_git() -> None:
    demo = next(a for a in _parser()._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    default = next(a.default for a in demo.choices["demo"]._actions if "--output" in a.option_strings)
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run([git, "check-ignore", "-q", f"{default}/dataset/manifest.json"], cwd=ROOT)
    assert result.returncode == 0, f"`seqpack demo` writes {default}/: add it to .gitignore"


# ---------------------------------------------------------------------------------------------- Train with it


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning", "ignore:'pin_memory':UserWarning")
def test_train_with_it_snippet_runs(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The "Train with it" snippet, as written, on the demo dataset, with a tiny Llama as `model`."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    snippet = README.split("## Train with it", 1)[1]
    code = re.search(r"```python\n(.*?)```", snippet, flags=re.DOTALL)
    assert code, "the Train with it section has no ```python block"
    monkeypatch.chdir(workspace(tmp_path, home, "python"))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=manifest["tokenizer"]["vocab_size"], hidden_size=16,
                                      intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1, max_position_embeddings=manifest["max_length"])
    namespace = {"model": transformers.LlamaForCausalLM(config).train()}
    exec(compile(code.group(1), "README.md (Train with it)", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["step"] >= 1, "the loader gave fewer than two batches of the demo dataset"
    assert math.isfinite(namespace["loss"].item())
    assert namespace["dl"].state_dict(), "the checkpoint the snippet's comment names"
