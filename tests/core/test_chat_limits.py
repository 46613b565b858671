"""Chat templates that loop for ever or build huge strings reject the record (``chat_template_error``, naming the
limit) instead of hanging a worker or exhausting its memory; the up-front check stops a run whose template does
so on every record.

Every attack runs in a child process with a time limit and a memory rlimit, so a broken fix fails the test
instead of hanging it or taking the machine's memory.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from helpers import chat_tokenizer, dataset_file, write_jsonl
from transformers import AutoTokenizer

from seqpack.chat import render_segments
from seqpack.chat_sandbox import RenderLimits
from seqpack.prompt_templates import RenderError
from seqpack.schemas import REJECTED_FILE, STATS_NAME

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
NESTED_RANGE = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
ATTACKS = {  # name: (template text put before ChatML, words the rejection's detail must contain)
    "nested_range": (NESTED_RANGE, "steps"),
    "repeat": ("{{ 'x' * 100000000 }}", "'*'"),
    "center": ("{{ 'x' | center(100000000) }}", "'center'"),
    "doubling": ("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                 "characters"),
    "macro_output": ("{% macro m() %}{% for i in range(100000) %}{{ 'y' * 50000 }}{% endfor %}{% endmacro %}"
                     "{% set x = m() %}", "characters"),
    "literal_output": ("{% set x %}{% for i in range(100000) %}" + "z" * 5000 + "{% endfor %}{% endset %}",
                       "characters"),
    "replace": ("{% set s = 'x' * 100000 %}{{ s | replace('x', s) }}", "'replace'"),
    "join": ("{% set s = 'x' * 100000 %}{{ s.join(range(100000) | map('string')) }}", "'join'"),
    "printf_width": ("{{ '%999999999d' % 1 }}", "'%'"),
    "format_width": ("{{ '{:>999999999}'.format(1) }}", "'format'"),
    "tojson_indent": ("{{ range(100000) | list | tojson(indent=100000) }}", "'tojson'"),
    "lipsum": ("{{ lipsum(100000) }}", "'lipsum'"),
    "power": ("{{ 9 ** (9 ** 9) }}", "'**'"),
    "int_squaring": ("{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
                     "integer"),
}
MESSAGES = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
CHILD_MEMORY = 8 << 30
CHILD = """
import json, sys
from transformers import AutoTokenizer
from seqpack.chat import render_segments
from seqpack.prompt_templates import RenderError
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
for name, template in json.loads(sys.argv[2]).items():
    tokenizer.chat_template = template
    try:
        render_segments(tokenizer, {messages})
        result = {{"accepted": True}}
    except RenderError as error:
        result = {{"reason": error.reason, "detail": error.detail}}
    print(json.dumps({{name: result}}), flush=True)
"""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def _run_child(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Python in a child process with at most ``CHILD_MEMORY`` of address space; a child that runs over the time
    limit is killed, and what it printed until then is returned with return code None."""
    command = [sys.executable, *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False,
                              preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
        return subprocess.CompletedProcess(command, None, output, f"killed after {timeout} s: rendering is not bounded")


@pytest.fixture(scope="module")
def attack_results(tokenizer_dir: Path) -> dict[str, Any]:
    """Every attack in one child (loading transformers once); an attack it did not get to is missing."""
    templates = {name: prefix + CHATML for name, (prefix, _) in ATTACKS.items()}
    script = CHILD.format(messages=repr(MESSAGES))
    done = _run_child(["-c", script, str(tokenizer_dir), json.dumps(templates)], timeout=120)
    results: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            results.update(json.loads(line))
    results["_stderr"] = done.stderr[-3000:]
    return results


@pytest.mark.parametrize("name", list(ATTACKS))
def test_an_attack_rejects_the_record_naming_the_limit(attack_results: dict[str, Any], name: str) -> None:
    assert name in attack_results, f"the child did not get to {name!r}: {attack_results['_stderr']}"
    result = attack_results[name]
    assert result.get("reason") == "chat_template_error", result
    assert ATTACKS[name][1] in result["detail"], result


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return _run_child(["-m", "seqpack.cli", "run", "-q", "--direct_running_mode=in_memory",
                       "--template", "chat", *args], timeout=timeout)


@pytest.mark.parametrize("prefix", [NESTED_RANGE, "{{ 'x' * 100000000 }}"], ids=["loop", "memory"])
def test_the_cli_stops_a_template_that_fails_every_record_before_any_work(
    tmp_path: Path, tokenizer_dir: Path, prefix: str
) -> None:
    hostile = chat_tokenizer(tokenizer_dir, tmp_path / "tok", prefix + CHATML)
    data = write_jsonl(tmp_path / "chats.jsonl", [{"messages": MESSAGES}])
    output = tmp_path / "out"
    done = _cli("-i", str(data), "-o", str(output), "-t", str(hostile), timeout=90)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "chat template goes over a limit" in done.stderr
    assert not output.exists()


def test_records_that_set_off_a_template_are_rejected_and_the_rest_are_kept(tmp_path: Path,
                                                                            tokenizer_dir: Path) -> None:
    """A template that only loops (or grows) for some contents passes the up-front check; those records are
    rejected with the limit in the detail, and the run finishes."""
    template = (
        "{%- for message in messages %}"
        "{%- if message['content'] == 'loop' %}" + NESTED_RANGE + "{%- endif %}"
        "{%- if message['content'] == 'grow' %}{{ 'x' * 100000000 }}{%- endif %}"
        "{%- endfor %}" + CHATML
    )
    tokenizer_path = chat_tokenizer(tokenizer_dir, tmp_path / "tok", template)
    records = [{"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "Fine."}]}
               for content in ["loop", "grow", "Hello", "Bonjour"]]
    data = write_jsonl(tmp_path / "chats.jsonl", records)
    output = tmp_path / "out"
    done = _cli("-i", str(data), "-o", str(output), "-t", str(tokenizer_path), timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads(dataset_file(output, STATS_NAME).read_text())
    assert stats["rejected_by_reason"] == {"chat_template_error": 2}
    rows = [row for path in dataset_file(output, "train").iterdir() for row in pq.read_table(path).to_pylist()]
    assert rows
    rejected = [json.loads(line) for line in dataset_file(output, REJECTED_FILE).read_text().splitlines()]
    details = sorted(entry["detail"] for entry in rejected)
    assert "steps" in " ".join(details) and "'*'" in " ".join(details), details


# --- in-process: ordinary templates, small limits -----------------------------------------------------------


@pytest.fixture(scope="module")
def chatml(tokenizer_dir: Path) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


def _conversation(turns: int) -> list[dict[str, str]]:
    return [message for n in range(turns) for message in (
        {"role": "user", "content": f"question {n}"}, {"role": "assistant", "content": f"answer {n}"})]


def test_the_step_limit_is_deterministic(chatml: Any) -> None:
    """The same record under the same limits is rejected the same way every time, whatever the clock says."""
    limits = RenderLimits(max_steps=200)
    assert render_segments(chatml, _conversation(2), limits=limits)
    details = set()
    for _ in range(3):
        with pytest.raises(RenderError) as error:
            render_segments(chatml, _conversation(20), limits=limits)
        details.add((error.value.reason, error.value.detail))
    [(reason, detail)] = details
    assert reason == "chat_template_error" and "200 steps" in detail


def test_the_output_limit_grows_with_the_conversation(chatml: Any) -> None:
    limits = RenderLimits(output_base_chars=100, output_chars_per_input_char=2)
    long_answer = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "word " * 2000}]
    assert render_segments(chatml, long_answer, limits=limits)
    padded = "{{ 'x' * 300 }}" + CHATML
    chatml.chat_template = padded
    try:
        with pytest.raises(RenderError, match="'\\*' would make a value of about 300 characters"):
            render_segments(chatml, _conversation(1), limits=limits)
    finally:
        chatml.chat_template = CHATML


@pytest.mark.parametrize(
    "template",
    [
        CHATML,
        "{% for m in messages %}{% generation %}{{ m['content'] | trim }}{% endgeneration %}"
        "{% if not loop.last %}\n{% endif %}{% endfor %}",
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{{ ns.n }}:{{ m | tojson }}"
        "{% endfor %}{{ bos_token }}{{ eos_token }}{% if add_generation_prompt %}>{% endif %}",
        "{% for m in messages|selectattr('role', 'equalto', 'user') %}{{ '%-8s|' % m.role }}{{ m.content.upper() }}"
        "{% endfor %}{{ messages|map(attribute='role')|join(', ') }}{{ ('ab' * 3)|center(12) }}",
    ],
    ids=["chatml", "generation-tag", "namespace-tojson-specials", "filters-and-methods"],
)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_rendering_matches_apply_chat_template(chatml: Any, template: str, add_generation_prompt: bool) -> None:
    """The bounded environment renders what transformers renders (same filters, globals and extensions)."""
    from seqpack.chat_sandbox import compile_chat_template, render_budget, render_chat

    messages = _conversation(2)
    chatml.chat_template = template
    try:
        expected = chatml.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        with render_budget(messages, RenderLimits()):
            actual = render_chat(compile_chat_template(template), chatml, messages,
                                 add_generation_prompt=add_generation_prompt)
    finally:
        chatml.chat_template = CHATML
    assert actual == expected


def test_the_up_front_check_lets_a_template_refuse_its_sample(chatml: Any) -> None:
    """Only going over a limit stops the run: a template may raise for the sample (it wants a system message),
    and then the records decide."""
    from seqpack.chat import require_chat_template

    chatml.chat_template = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}"
    try:
        assert require_chat_template(chatml) is not None
        chatml.chat_template = "{% for m in messages %}"
        with pytest.raises(ValueError, match="does not compile"):
            require_chat_template(chatml)
    finally:
        chatml.chat_template = CHATML
