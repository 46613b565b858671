"""Train a tiny, randomly initialised Llama on a seqpack dataset: on CPU, in seconds.

    python examples/train_hf.py out/ --steps 20                          # a plain PyTorch loop
    python examples/train_hf.py out/ --steps 20 --checkpoint ckpt.pt     # stop any time, run again: it resumes
    python examples/train_hf.py out/ --steps 20 --trainer                # the Hugging Face Trainer (needs accelerate)

The model is tiny and random so that the example needs no download; swap in
``AutoModelForCausalLM.from_pretrained(...)`` for real training. Batches are padding-free (one 1×T row with
FlashAttention varlen arguments), which transformers handles exactly with flash_attention_2, sdpa or eager.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from seqpack.loader import PackedDataLoader, PackedDataset, collate_padding_free


def tiny_llama(dataset: PackedDataset, attention: str) -> LlamaForCausalLM:
    """A 2-layer Llama sized for the dataset's vocabulary (added tokens included) and block length."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=dataset.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=dataset.max_length,
        attn_implementation=attention,
    )
    model = LlamaForCausalLM(config)
    # With a pretrained model, grow the embeddings if the dataset's tokenizer added tokens:
    if model.get_input_embeddings().num_embeddings < dataset.vocab_size:
        model.resize_token_embeddings(dataset.vocab_size)
    return model


def train_loop(args: argparse.Namespace) -> list[float]:
    """A plain loop that checkpoints the model, the optimizer and the data position together."""
    dataset = PackedDataset(args.data, split="train", seed=args.seed, batch_size=args.batch_size)
    loader = PackedDataLoader(
        dataset,
        num_workers=args.workers,
        collate_fn=collate_padding_free,
        pin_memory=torch.cuda.is_available(),
    )
    model = tiny_llama(dataset, args.attention).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    step = 0
    if args.checkpoint and os.path.exists(args.checkpoint):
        saved = torch.load(args.checkpoint, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        loader.load_state_dict(saved["data"])
        step = saved["step"]
        print(f"resumed at step {step}, epoch {saved['data']['epoch']}, sample {saved['data']['samples_seen']}")
    losses = []
    while step < args.steps:
        for batch in loader:  # one epoch; the loader moves to the next epoch's order by itself
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            losses.append(loss.item())
            print(f"step {step} epoch {dataset.epoch} loss {loss.item():.4f} tokens {batch['input_ids'].shape[1]}")
            if args.checkpoint and (step % args.save_every == 0 or step == args.steps):
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
                torch.save({**state, "data": loader.state_dict(), "step": step}, args.checkpoint)
            if step == args.steps:
                break
    return losses


def train_with_trainer(args: argparse.Namespace) -> list[float]:
    """The same with ``transformers.Trainer``: hand it the dataset and the collate."""
    from transformers import Trainer, TrainingArguments

    dataset = PackedDataset(args.data, split="train", seed=args.seed, batch_size=args.batch_size)
    model = tiny_llama(dataset, args.attention)
    training_args = TrainingArguments(
        output_dir=args.output,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,  # must equal the dataset's batch_size
        dataloader_num_workers=args.workers,
        learning_rate=args.lr,
        logging_steps=1,
        save_strategy="no",
        remove_unused_columns=False,  # the collate needs seq_lens, which is not a model argument
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset, data_collator=collate_padding_free)
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def main(argv: Sequence[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a seqpack dataset directory or URL")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    parser.add_argument("--checkpoint", help="save here every --save-every steps; resume from it if present")
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--trainer", action="store_true", help="use transformers.Trainer instead of a loop")
    parser.add_argument("--output", default="trainer-output", help="Trainer output directory")
    args = parser.parse_args(argv)
    return train_with_trainer(args) if args.trainer else train_loop(args)


if __name__ == "__main__":
    main()
