"""Tensor parallelism beside data parallelism: T processes share one copy of the model, N // T copies share the prompts.

Ranks 0..T-1 form replica 0, ranks T..2T-1 replica 1, and so on (transformers lays its device mesh out the same
way: the "tp" axis is the last, so neighbouring ranks split one model). Every rank of a replica gets the same
prompts, runs the same generate calls (each matrix product is split between them and summed by an all-reduce),
and only the first rank of the replica reports the completions.
"""

from __future__ import annotations

import dataclasses
import warnings

import transformers

from .models import is_synthetic, model_config

try:  # transformers >= 5.17 (5.4 and 5.16 have a DistributedConfig without tp_size)
    from transformers.distributed import DistributedConfig
    OPTIONS = {f.name for f in dataclasses.fields(DistributedConfig)}
except ImportError:
    DistributedConfig, OPTIONS = None, set()
TESTED = "5.24"  # the transformers release DP x TP was checked with
# DTensor warns on every generate over a CPU mesh; greedy decoding draws no random numbers, so it is noise here
warnings.filterwarnings("ignore", message="DTensor random operators may not have complete support on cpu")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one process stands: which replica it serves, how many there are, its rank inside the replica."""

    replica: int
    replicas: int
    tp_rank: int
    tp_size: int

    @classmethod
    def of(cls, rank: int, num_processes: int, tp_size: int) -> Layout:
        """The layout of process `rank` among `num_processes` split into replicas of `tp_size` ranks."""
        return cls(rank // tp_size, num_processes // tp_size, rank % tp_size, tp_size)

    @property
    def is_replica_lead(self) -> bool:
        """True for the one rank of its replica that hands in the completions (the others hold the same)."""
        return self.tp_rank == 0


def check_tp(model: str, num_processes: int, tp_size: int, continuous: bool = False) -> None:
    """Refuse, before any process starts, a TP size the process count, the model, the mode or transformers cannot take.

    `continuous`: the run uses transformers' continuous-batching scheduler, whose paged cache fails on DP x TP.
    """
    if tp_size == 1:
        return
    if num_processes % tp_size:
        lower = max(t for t in range(1, tp_size + 1) if num_processes % t == 0)
        raise ValueError(f"{num_processes} process(es) cannot form replicas of tp_size={tp_size} ranks. "
                         f"Fix: use a multiple of {tp_size} processes, or tp_size={lower}.")
    if is_synthetic(model):
        raise ValueError(f"tp_size > 1 loads a checkpoint split between processes, but {model} is built whole in "
                         "memory. Fix: use tiny, small or a checkpoint folder with --tp-size.")
    config = model_config(model)
    if not getattr(config, "base_model_tp_plan", None):
        raise ValueError(f"{model} ({config.model_type}) has no tensor-parallel plan in transformers, so it cannot be "
                         "split. Fix: use tp_size=1 (data parallelism), or a model with a plan such as Llama.")
    heads = {"attention heads": config.num_attention_heads,
             "key/value heads": getattr(config, "num_key_value_heads", None) or config.num_attention_heads}
    for what, count in heads.items():
        if count % tp_size:
            fits = [t for t in range(1, count + 1) if count % t == 0 and t <= num_processes]
            raise ValueError(f"{model} has {count} {what}, which tp_size={tp_size} does not divide. "
                             f"Fix: use a tp_size that divides {count} (one of {', '.join(map(str, fits))}).")
    if continuous and num_processes > tp_size:
        raise ValueError(f"continuous batching cannot run {num_processes // tp_size} tensor-parallel replicas (its "
                         f"paged cache fails on DP x TP in transformers {transformers.__version__}). "
                         f"Fix: tp_size={num_processes} (one replica), or another mode such as budget.")
    check_transformers(num_processes // tp_size)


def check_transformers(replicas: int) -> None:
    """Refuse TP on a transformers without DistributedConfig(tp_size=...), and DP x TP without dp_replicate_size."""
    need = "tp_size" if replicas == 1 else "dp_replicate_size"
    if need not in OPTIONS:
        what = "tensor parallelism" if replicas == 1 else f"{replicas} tensor-parallel replicas (DP x TP)"
        raise ValueError(f"transformers {transformers.__version__} cannot load {what}: its DistributedConfig has no "
                         f"{need}. Fix: pip install -U 'transformers>={TESTED}', or tp_size=1"
                         f"{'' if replicas == 1 else ' or tp_size=num_processes'}.")


def load_options(layout: Layout) -> dict:
    """The from_pretrained keyword that splits the model between the ranks of each replica."""
    replicas = {"dp_replicate_size": layout.replicas} if layout.replicas > 1 else {}
    return {"distributed_config": DistributedConfig(tp_size=layout.tp_size, **replicas)}


def parameter_bytes(model) -> int:
    """Bytes of the parameters this process holds (its shard of each split weight, the whole of the others)."""
    local = (p.to_local() if hasattr(p, "to_local") else p for p in model.parameters())
    return sum(t.numel() * t.element_size() for t in local)
