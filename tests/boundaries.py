"""A tokenizer whose merges cross the boundaries seqpack cuts at, for the tests of ``--chat-boundary`` and
``--pair-boundary`` (importable as ``boundaries``, like ``helpers``).

Its byte-level BPE is trained on text where a newline is often followed by spaces, so ``"\\n "`` is one token:
ChatML's ``<|im_start|>assistant\\n`` followed by an answer that starts with spaces then has a token that holds
the last character of the prompt and the first of the answer.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
MERGING = "  Bonjour"
"""Assistant content whose start merges with the newline before it: rejected under the joint boundary."""
CLEAN = ["Bonjour le monde", "\n\nLe chat", " Le chien"]
"""Assistant contents whose start is a token boundary in the whole text too (``"\\n\\n"`` and ``" "`` do not
merge with the prompt's newline here), though several tokenize differently on their own than in the whole."""
TEXTS = [f"{word}\n  {other} le monde\n\n{other} {word}." for word in ("Hello", "The cat", "Translate")
         for other in ("Bonjour", "Le chat", "Le chien")] * 20


def merging_chat_tokenizer(directory: Path) -> Path:
    """A ChatML tokenizer directory (no BOS, EOS ``</s>``) whose vocabulary merges ``"\\n "``."""
    from helpers import chat_tokenizer

    from seqpack.demo import build_tokenizer

    base = build_tokenizer(directory / "base", TEXTS, add_bos=False)
    return chat_tokenizer(base, directory / "chatml", CHATML)
