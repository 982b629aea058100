"""Train the bundled `tiny` model from scratch on CPU: a byte-level BPE tokenizer and a small Llama.

`python -m mgpu_lab train-tiny --out assets/models/tiny --force` rebuilds the committed folder in about ten
minutes on two CPU cores (it uses torch's default threads: one per core). The run is seeded and its
learning rate follows the step count, so a rerun on the same CPU gives the same weights; another CPU
type or core count gives slightly different ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ..files import refuse_to_replace
from ..paths import DOCS, TINY
from . import corpus

if TYPE_CHECKING:  # imported where used: the kit's other commands need neither
    from matplotlib.figure import Figure
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


@dataclass
class TinyConfig:
    """The knobs of one training run (model shape, optimiser, data)."""

    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    context: int = 256
    batch_size: int = 16
    steps: int = 1200
    warmup_steps: int = 100
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    heldout_fraction: float = 0.05
    eval_every: int = 100
    seed: int = 0


def lr_at(step: int, cfg: TinyConfig) -> float:
    """Learning rate at `step`: linear warm-up, then cosine decay to `min_lr_ratio * lr`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A llama2-like byte-level BPE tokenizer: adds <s> in front, ends with </s>, has no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK, padding_side="right"
    )


def build_model(cfg: TinyConfig, tokenizer) -> LlamaForCausalLM:
    """A fresh, seeded LlamaForCausalLM with tied embeddings, shaped by `cfg`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads,
        max_position_embeddings=cfg.context,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
    )
    return LlamaForCausalLM(config)


def encode_documents(tokenizer, documents: list[str]) -> torch.Tensor:
    """One long token stream: each document as <s> text </s>, back to back."""
    ids = tokenizer(documents)["input_ids"]
    return torch.tensor([t for doc in ids for t in doc + [tokenizer.eos_token_id]], dtype=torch.long)


def split_documents(documents: list[str], cfg: TinyConfig) -> tuple[list[str], list[str]]:
    """A seeded train / held-out split of the documents."""
    shuffled = documents[:]
    random.Random(cfg.seed).shuffle(shuffled)
    n_heldout = max(1, int(len(shuffled) * cfg.heldout_fraction))
    return shuffled[n_heldout:], shuffled[:n_heldout]


def sample_batch(stream: torch.Tensor, cfg: TinyConfig, generator: torch.Generator) -> torch.Tensor:
    """`batch_size` windows of `context` tokens at seeded random offsets in the stream."""
    starts = torch.randint(0, len(stream) - cfg.context, (cfg.batch_size,), generator=generator)
    return torch.stack([stream[s : s + cfg.context] for s in starts.tolist()])


@torch.no_grad()
def heldout_loss(model, stream: torch.Tensor, cfg: TinyConfig, max_windows: int = 32) -> float:
    """Mean loss over consecutive held-out windows (at most `max_windows`; one, if the stream is short)."""
    model.eval()
    width = min(cfg.context, len(stream))
    windows = stream[: len(stream) // width * width].view(-1, width)[:max_windows]
    losses = [model(input_ids=w, labels=w).loss.item() for w in windows.split(cfg.batch_size)]
    model.train()
    return sum(losses) / len(losses)


def train(model, train_stream: torch.Tensor, heldout_stream: torch.Tensor, cfg: TinyConfig) -> dict:
    """Run the training loop; return the per-step losses and the held-out losses."""
    generator = torch.Generator().manual_seed(cfg.seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimiser = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95),
    )
    losses, heldout = [], []
    model.train()
    bar = tqdm(range(cfg.steps), desc="train-tiny")
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = sample_batch(train_stream, cfg, generator)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 weights, bf16 matmuls: ~2x faster on CPU
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            heldout.append({"step": step + 1, "loss": round(heldout_loss(model, heldout_stream, cfg), 4)})
        bar.set_postfix(loss=f"{losses[-1]:.3f}", heldout=f"{heldout[-1]['loss']:.3f}" if heldout else "-")
    return {"losses": losses, "heldout": heldout}


def save_folder(model, tokenizer, out: Path) -> None:
    """Write the HF folder (fp16 weights) with a tokenizer config that transformers 4.x reads too."""
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out)
    model.to(torch.float32)
    tokenizer.save_pretrained(out)
    config_path = out / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text())
    tok_config.update(tokenizer_class="PreTrainedTokenizerFast", model_input_names=["input_ids", "attention_mask"])
    config_path.write_text(json.dumps(tok_config, indent=2) + "\n")


def plot_loss(log: dict, path: str | Path | None = None) -> Figure:
    """Plot the training and held-out loss curves of a `training_log.json`; save to `path` if given."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(log["losses"]) + 1), log["losses"], lw=0.8, alpha=0.6, label="training batch")
    ax.plot([h["step"] for h in log["heldout"]], [h["loss"] for h in log["heldout"]], "o-", label="held-out")
    ax.set(xlabel="step", ylabel="cross-entropy loss", title="tiny: training on Jane Austen")
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    plt.close(fig)  # shown once, by whoever displays the returned figure
    return fig


def _card(log: dict, quality: dict, plot_rel: str) -> str:
    """The model card (README.md) for the trained folder."""
    c = log["config"]
    rows = "\n".join(f"| {k} | {v} |" for k, v in quality.items())
    return f"""---
license: mit
library_name: transformers
pipeline_tag: text-generation
---

# tiny: a {log['parameters'] / 1e6:.1f}M-parameter Llama trained on Jane Austen

A toy, not a real LLM: it exists so the kit's lessons run offline on a laptop CPU with a model that
has the same shape of interface as llama2 (a `LlamaForCausalLM` and a tokenizer that adds `<s>`,
ends with `</s>` and has no pad token). It writes Austen-flavoured English and little else.

- **Corpus**: {log['corpus']} ({log['documents']} documents of two or more sentences and at least 30-70 words,
  each `<s> text </s>`;
  {log['heldout_documents']} held out). Licence: {log['licence']}. Gathered at training time by
  `mgpu_lab/tiny/corpus.py` from Debian's `r-cran-janeaustenr` package.
- **Tokenizer**: byte-level BPE, {log['vocab_size']} tokens, trained on the same text.
- **Model**: Llama, hidden {c['hidden_size']}, {c['num_hidden_layers']} layers, {c['num_attention_heads']} heads,
  MLP {c['intermediate_size']}, context {c['context']}, tied embeddings, {log['parameters']:,} parameters,
  stored as fp16.
- **Training**: {c['steps']} steps of {c['batch_size']} x {c['context']} tokens ({log['tokens_seen']:,} tokens),
  bf16 autocast over fp32 weights, AdamW, lr {c['lr']} with {c['warmup_steps']} warm-up steps then cosine to {c['min_lr_ratio']} x, seed {c['seed']},
  {log['wall_time_s'] / 60:.1f} min on {log['threads']} CPU threads.
- **Loss**: final training loss {log['final_loss']:.3f} (mean of the last 50 steps), held-out {log['heldout_loss']:.3f}.

![loss curve]({plot_rel})

## Quality (100 default prompts, 100 new tokens, greedy, batched with left padding)

| figure | value |
|---|---|
{rows}

`real_words`: share of generated words found in SCOWL's American word list (Debian's `wamerican`,
shipped in `assets/words/`); `stopped_at_eos`: share of completions that ended with `</s>`;
`under_5_tokens`: share with fewer than 5 generated tokens;
`distinct_3grams`: distinct word 3-grams over all 3-grams of the distinct completions.

## Rebuild

```
python -m mgpu_lab train-tiny --out assets/models/tiny --force
```

The run is seeded and its learning rate follows the step count, so a rerun on the same CPU type
gives the same weights; another CPU type rebuilds it slightly differently (floating-point kernels
differ), with figures close to these.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `train-tiny` options to `parser`."""
    defaults = TinyConfig()
    parser.add_argument("--out", default=str(TINY), help="folder to write (default: the bundled model's)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="training steps (default: %(default)s)")
    parser.add_argument("--max-docs", type=int, default=None, help="use only the first N documents (smoke tests)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default: %(default)s)")
    parser.add_argument("--plot", default=str(DOCS / "tiny_loss_curve.png"), help="loss-curve PNG (default: docs/)")
    parser.add_argument("--no-quality", action="store_true", help="skip the quality measurement for the card")
    parser.add_argument("--force", action="store_true",
                        help="replace what --out and --plot already hold (the defaults are the kit's own tiny files)")


def run(args: argparse.Namespace, documents: list[str] | None = None) -> int:
    """Train tiny as `args` say and write the folder, log, loss curve and model card; return 0."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = TinyConfig(steps=args.steps, seed=args.seed, eval_every=min(TinyConfig.eval_every, args.steps))
    out = Path(args.out)
    refuse_to_replace([*(out.iterdir() if out.is_dir() else [out]), Path(args.plot)], args.force)  # before training
    start = time.perf_counter()
    documents = documents if documents is not None else corpus.make_documents(corpus.load_paragraphs(), cfg.seed)
    documents = documents[: args.max_docs]
    train_docs, heldout_docs = split_documents(documents, cfg)
    tokenizer = train_tokenizer(train_docs, cfg.vocab_size)
    model = build_model(cfg, tokenizer)
    train_stream = encode_documents(tokenizer, train_docs)
    heldout_stream = encode_documents(tokenizer, heldout_docs)
    history = train(model, train_stream, heldout_stream, cfg)
    save_folder(model, tokenizer, out)
    log = {
        "corpus": corpus.CORPUS_NAME, "licence": corpus.CORPUS_LICENCE, "config": asdict(cfg),
        "documents": len(documents), "heldout_documents": len(heldout_docs), "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.context, "steps": cfg.steps,
        "final_loss": sum(history["losses"][-50:]) / len(history["losses"][-50:]),
        "heldout_loss": history["heldout"][-1]["loss"], **history,
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    plot = Path(args.plot)
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot_loss(log, plot)
    quality = {} if args.no_quality else _measure(out)
    (out / "README.md").write_text(_card(log, quality, os.path.relpath(plot, out)))
    print(f"wrote {out} in {log['wall_time_s'] / 60:.1f} min; held-out loss {log['heldout_loss']:.3f}; {quality}")
    return 0


def _measure(folder: Path) -> dict:
    """The four quality figures of the saved folder on the default prompts."""
    from .quality import measure_model

    return measure_model(str(folder)).as_dict()
