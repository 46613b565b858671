"""The tokenize step when the boundary is joint: each example's text tokenized once, whole, as
``apply_chat_template(tokenize=True)`` does, and masked by character offsets (``seqpack.boundary``).

``--chat-boundary joint`` and ``--pair-boundary joint`` choose these DoFns; an example whose boundary falls inside
a token goes to ``rejected/`` as ``boundary_inside_token``. Everything after the ids (filters, EOS, the overlong
policy, keys, statistics) is the default steps' own code, so only the ids can differ. Pairs take the one-by-one
path of ``TokenizeDoFn`` here (no encode cache, no array path): slower, and only for this mode.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam

from seqpack.boundary import BoundaryError, joint_pairs, joint_segments, offsets_encoder
from seqpack.chat import Segment
from seqpack.faults import checkpoint
from seqpack.inputs import Rejected
from seqpack.tokenizer import load_backend
from seqpack.transforms.render import REJECTED_TAG, raw_json
from seqpack.transforms.tokenize import ChatTokenizeDoFn, TokenizeDoFn


class JointTokenizeDoFn(TokenizeDoFn):
    """Batches of ``(source_text, target_text, origin)`` in, examples out: ``source + target`` tokenized as one
    text and cut where the target starts; the tokenizer's prefix (BOS) and the EOS go around it as in ``split``."""

    def setup(self) -> None:
        super().setup()
        # Offsets come from the Rust tokenizer: the driver's saved one when it planned one, else the loaded one's.
        source = self.tokenizer if self.backend is None else load_backend(self.backend.tokenizer_json)
        self.encode_joint = offsets_encoder(source)

    def process(self, batch: Sequence[tuple[str, str, str]]) -> Iterator[Any]:
        checkpoint("tokenize")
        encoded = joint_pairs(self.encode_joint, [(source, target) for source, target, _ in batch])
        for pair, result in zip(batch, encoded, strict=True):
            if isinstance(result, BoundaryError):
                source_text, target_text, origin = pair
                raw = raw_json({"source": source_text, "target": target_text})
                yield beam.pvalue.TaggedOutput(REJECTED_TAG, Rejected(result.reason, origin, raw, result.detail))
                continue
            yield from self._add_one(pair, *result)
        yield from self.spill_full()


class JointChatTokenizeDoFn(ChatTokenizeDoFn):
    """``ChatTokenizeDoFn`` with each conversation's rendering tokenized whole: the ids are exactly
    ``apply_chat_template(messages, tokenize=True)``'s, the assistant spans masked by offsets."""

    def setup(self) -> None:
        super().setup()
        self.encode_joint = offsets_encoder(self.tokenizer)

    def tokenize(self, conversations: Sequence[Sequence[Segment]]) -> list[Any]:
        return joint_segments(self.encode_joint, conversations)
