"""Which prompts go together: fixed batches, length-sorted batches, token-budget batches, a token-balanced split.

The sizes arrive checked (engine/validate.py, at the entry of a run or a generate_* call).
"""

from __future__ import annotations


def fixed_batches(count: int, size: int) -> list[list[int]]:
    """The article's batching: consecutive groups of `size` positions, in input order."""
    return [list(range(start, min(start + size, count))) for start in range(0, count, size)]


def by_length(lengths: list[int]) -> list[int]:
    """Positions ordered by prompt length (ties keep input order), so neighbours pad little."""
    return sorted(range(len(lengths)), key=lambda i: (lengths[i], i))


def sorted_batches(lengths: list[int], size: int) -> list[list[int]]:
    """Groups of `size` prompts of similar length: sort by length, then cut."""
    order = by_length(lengths)
    return [[order[i] for i in batch] for batch in fixed_batches(len(order), size)]


def budget_batches(lengths: list[int], max_new_tokens: int, budget: int) -> list[list[int]]:
    """Length-sorted batches as large as fit `budget` padded tokens: rows x (longest prompt + new tokens)."""
    batches: list[list[int]] = []
    for position in by_length(lengths):
        width = lengths[position] + max_new_tokens  # the longest so far, since lengths only grow
        if batches and (len(batches[-1]) + 1) * width <= budget:
            batches[-1].append(position)
        else:
            batches.append([position])  # a prompt larger than the budget still runs, alone
    return batches


def balanced_shares(costs: list[int], num_processes: int) -> list[list[int]]:
    """Share positions between processes so each gets about the same total cost (largest first, to the lightest)."""
    shares: list[list[int]] = [[] for _ in range(num_processes)]
    loads = [0] * num_processes
    for position in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        lightest = loads.index(min(loads))
        shares[lightest].append(position)
        loads[lightest] += costs[position]
    return [sorted(share) for share in shares]
