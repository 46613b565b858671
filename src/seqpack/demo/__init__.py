"""Demo data and a small tokenizer that ship with seqpack, so the pipeline runs offline out of the box.

``pairs.jsonl`` holds a few hundred English→French pairs written for the project (``make_pairs`` made it);
``build_tokenizer`` trains a small byte-level BPE tokenizer on any texts with the ``tokenizers`` library and
saves it as a Hugging Face tokenizer directory. Tests use the same builder.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

SUBJECTS = [
    ("the cat", "le chat"), ("the dog", "le chien"), ("my brother", "mon frère"), ("the teacher", "le professeur"),
    ("the child", "l'enfant"), ("our neighbour", "notre voisin"), ("the baker", "le boulanger"),
    ("the doctor", "le médecin"), ("my friend", "mon ami"), ("the farmer", "le fermier"),
]
VERBS = [
    ("eats", "mange"), ("sees", "voit"), ("wants", "veut"), ("likes", "aime"), ("finds", "trouve"),
    ("buys", "achète"), ("carries", "porte"), ("paints", "peint"),
]
OBJECTS = [
    ("an apple", "une pomme"), ("the bread", "le pain"), ("a red bicycle", "un vélo rouge"),
    ("the small house", "la petite maison"), ("a green book", "un livre vert"), ("the old car", "la vieille voiture"),
]
TAILS = [("", ""), (" every morning", " chaque matin"), (" in the garden", " dans le jardin"),
         (" with great care", " avec grand soin")]

SPECIAL_TOKENS = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}


def make_pairs() -> list[dict[str, str]]:
    """All sentence pairs of the small grammar above, in a fixed order (480 pairs)."""
    pairs = []
    grammar = itertools.product(SUBJECTS, VERBS, OBJECTS, TAILS)
    for n, ((s_en, s_fr), (v_en, v_fr), (o_en, o_fr), (t_en, t_fr)) in enumerate(grammar):
        if n % 4 != n // 96 % 4:  # one sentence in four, rotating so that every tail is represented
            continue
        en = f"{s_en} {v_en} {o_en}{t_en}."
        fr = f"{s_fr} {v_fr} {o_fr}{t_fr}."
        pairs.append({"source": en[0].upper() + en[1:], "target": fr[0].upper() + fr[1:]})
    return pairs


def demo_pairs_path() -> Path:
    return Path(str(resources.files("seqpack.demo").joinpath("pairs.jsonl")))


def build_tokenizer(
    out_dir: str | Path,
    texts: Iterable[str],
    *,
    vocab_size: int = 512,
    add_bos: bool = True,
) -> Path:
    """Train a byte-level BPE tokenizer on ``texts`` and save it as a Hugging Face tokenizer directory.

    With ``add_bos`` it prepends ``<s>`` like Llama tokenizers do; without, it adds nothing, like GPT-2.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL_TOKENS[k] for k in ("pad", "bos", "eos", "unk")],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    bos = SPECIAL_TOKENS["bos"]
    if add_bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["pad"],
        unk_token=SPECIAL_TOKENS["unk"],
    )
    out = Path(out_dir)
    fast.save_pretrained(str(out))
    return out


def build_demo_tokenizer(out_dir: str | Path) -> Path:
    """The demo tokenizer: BPE trained on the demo pairs (both languages)."""
    texts = [text for pair in make_pairs() for text in (pair["source"], pair["target"])]
    return build_tokenizer(out_dir, texts)
