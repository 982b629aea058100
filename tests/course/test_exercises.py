"""Every exercise check accepts the solution and rejects each typical wrong answer, and each loophole, with a hint."""

import contextlib
import importlib.util
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import gather_object
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from mgpu_lab.course import batched_check, exercises
from mgpu_lab.course.demos import what_each_process_sees
from mgpu_lab.course.memory import best_layout
from mgpu_lab.course.staircase import calls_on_busiest_rank
from mgpu_lab.course.watch import describe_call
from mgpu_lab.launcher import launch as launch_module
from mgpu_lab.engine.batching import budget_batches
from mgpu_lab.engine.generate import generate_batched
from mgpu_lab.engine.prompts import default_prompts
from mgpu_lab.engine.results import Completion

SOLUTIONS = Path(__file__).resolve().parents[2] / "notebooks" / "solutions" / "solutions.py"
spec = importlib.util.spec_from_file_location("solutions", SOLUTIONS)
solutions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(solutions)


def launched(*values) -> pytest.param:
    """A parametrized case whose check launches processes: in the multiprocess tier."""
    return pytest.param(*values, marks=pytest.mark.multiprocess)


def squares_without_a_list() -> list[int]:
    return gather_object(Accelerator().process_index ** 2)


def squares_local_only() -> list[int]:
    return [Accelerator().process_index ** 2]


def squares_computed_in_one_process() -> list[int]:
    """The right list, with no gather: every process computes every rank's value itself."""
    return [r * r for r in range(Accelerator().num_processes)]


def squares_written_out() -> list[int]:
    return [0, 1, 4]


def squares_gather_anything() -> list[int]:
    """Makes a gather, but of the wrong thing, and returns a list computed in each process."""
    accelerator = Accelerator()
    gather_object([accelerator.process_index])
    return [r * r for r in range(accelerator.num_processes)]


def squares_for_three() -> list[int]:
    """Gathers right, then returns the lesson's 3-process answer whatever the world size."""
    accelerator = Accelerator()
    gather_object([accelerator.process_index ** 2])
    return [0, 1, 4]


def squares_by_tensor_gather():
    """Correct, another way: accelerator.gather on a tensor, the tensor returned as it is."""
    accelerator = Accelerator()
    return accelerator.gather(torch.tensor([accelerator.process_index ** 2]))


def squares_by_tensor_gather_as_list() -> list[int]:
    """Correct, another way: a 0-d tensor gathered, then turned into a list."""
    accelerator = Accelerator()
    return accelerator.gather(torch.tensor(accelerator.process_index ** 2)).tolist()


def squares_with_partial_state_and_a_tuple() -> tuple:
    """Correct, another way: PartialState instead of an Accelerator, a tuple sent and returned."""
    state = PartialState()
    return tuple(gather_object((state.process_index ** 2,)))


def squares_with_torch_itself() -> list[int]:
    """Correct, another way: torch.distributed.all_gather_object directly."""
    rank = Accelerator().process_index
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, rank ** 2)
    return out


def squares_through_the_kit() -> list[int]:
    """Lets a kit demonstration do the gathering."""
    return [seen["process_index"] ** 2 for seen in what_each_process_sees()]


def restore_by_text(shares, count):
    """Drops duplicates by value: the article's prompts repeat, so real prompts go too."""
    seen, kept = set(), []
    for index, prompt in sorted(pair for share in shares for pair in share):
        if prompt not in seen:
            seen.add(prompt)
            kept.append((index, prompt))
    return kept


def restore_the_article(shares, count):
    """Ignores its input: the article's first prompts, which the lesson's shares happen to hold."""
    return list(enumerate(default_prompts()[:count]))


def restore_as_lists(shares, count):
    """Correct, another way: pairs as lists, dropped by index with a set, sorted."""
    seen, kept = set(), []
    for share in shares:
        for index, prompt in share:
            if index not in seen:
                seen.add(index)
                kept.append([index, prompt])
    return sorted(kept)


def restore_for_the_fixed_cases(shares, count):
    """Correct only for the splits the lesson names: drops each share's tail as if 4 processes padded it."""
    return [pair for share in shares for pair in share][:count]


def restore_the_lessons_shares(shares, count):
    """Ignores its input: restores the shares the notebook printed, whatever the check hands it."""
    printed = exercises.padded_pair_shares(count, 4)
    return sorted({index: prompt for share in printed for index, prompt in share}.items())


CALLS_TABLE = {case: solutions.calls(*case) for case in exercises.CALLS_CASES}  # passes every fixed case


def calls_via_the_kit(prompts, processes, batch_size):
    return calls_on_busiest_rank(prompts, processes, batch_size)


FIXED_LENGTHS = list(exercises.varied_lengths()[:60])
FIXED_BATCHES = solutions.budget_batches(FIXED_LENGTHS, 20, 2048)


def batched_with(pad_token=True, padding_side="left", add_special_tokens=True, cut_prompt=True, cut_eos=True,
                 order=sorted, gather=True, split=True, one_at_a_time=False, whole_share=False, new_tokens=None,
                 no_mask=False, strided=False, attribute_padding=False, multiple_of_8=False, as_lists=False,
                 explicit_tensors=False, via_config=False):
    """The lesson 3 solution with one of the usual mistakes, or one other correct style, switched on."""
    def batched(folder, prompts, max_new_tokens, batch_size):
        accelerator = Accelerator()
        model = AutoModelForCausalLM.from_pretrained(folder, device_map={"": accelerator.device})
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if pad_token:
            tokenizer.pad_token = tokenizer.eos_token
        if attribute_padding:
            tokenizer.padding_side = padding_side
        results = []
        items = list(enumerate(prompts))
        if strided:
            items = items[accelerator.process_index::accelerator.num_processes]
        with accelerator.split_between_processes(items) if split and not strided else contextlib.nullcontext(
                items) as share:
            size = 1 if one_at_a_time else len(share) if whole_share else batch_size
            for start in range(0, len(share), max(size, 1)):
                chunk = share[start:start + size]
                side = {} if attribute_padding else {"padding_side": padding_side}
                batch = tokenizer([p for _, p in chunk], return_tensors="pt", padding=True,
                                  add_special_tokens=add_special_tokens,
                                  pad_to_multiple_of=8 if multiple_of_8 else None, **side)
                if no_mask:
                    del batch["attention_mask"]
                kwargs = dict(max_new_tokens=new_tokens or max_new_tokens, do_sample=False,
                              pad_token_id=tokenizer.eos_token_id)
                if via_config:
                    output = model.generate(**batch, generation_config=GenerationConfig(**kwargs))
                elif explicit_tensors:
                    output = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                            **kwargs)
                else:
                    output = model.generate(**batch, **kwargs)
                width = batch["input_ids"].shape[1] if cut_prompt else 0
                for (index, _), new in zip(chunk, output[:, width:].tolist()):
                    if cut_eos and tokenizer.eos_token_id in new:
                        new = new[:new.index(tokenizer.eos_token_id) + 1]
                    row = (index, tokenizer.decode(new, skip_special_tokens=True), len(new))
                    results.append(list(row) if as_lists else row)
        return order(gather_object(results) if gather else results)
    return batched


def not_done(*args):
    raise NotImplementedError("write your answer here")


def budget_with_the_lessons_numbers(lengths, new_tokens, budget):
    """Hard-codes the lesson's new tokens and budget."""
    return solutions.budget_batches(lengths, 20, 2048)


def budget_largest_first(lengths, new_tokens, budget):
    """Correct, another way: longest prompts first, each batch as tuples, grown while the longest row fits."""
    batches, current = [], []
    for position in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        longest = lengths[current[0]] if current else lengths[position]
        if current and (len(current) + 1) * (longest + new_tokens) > budget:
            batches.append(tuple(current))
            current = []
        current.append(position)
    return batches + [tuple(current)]


LAYOUT_TABLE = {case: solutions.layout(*case) for case in exercises.LAYOUT_CASES}  # passes every fixed box


def layout_as_a_list(weights, kv_cache, gpu_bytes, gpus, heads):
    """Correct, another way: [replicas, tp_size] as a list."""
    answer = solutions.layout(weights, kv_cache, gpu_bytes, gpus, heads)
    return None if answer is None else list(answer)


def layout_in_gigabytes(weights, kv_cache, gpu_bytes, gpus, heads):
    """Wrong: takes a GPU's '24 GB' as 10**9 bytes, where vendors mean GiB; only tight boxes tell."""
    return solutions.layout(weights, kv_cache, gpu_bytes / 2**30 * 1e9, gpus, heads)


def layout_strictly_below(weights, kv_cache, gpu_bytes, gpus, heads):
    """Wrong at the edge: a copy that fills a GPU exactly counts as not fitting (< where <= is meant)."""
    for tp in range(1, gpus + 1):
        if gpus % tp == 0 and heads % tp == 0 and (weights + kv_cache) / tp < gpu_bytes:
            return gpus // tp, tp
    return None


def layout_powers_of_two(weights, kv_cache, gpu_bytes, gpus, heads):
    """Wrong: tries TP sizes 1, 2, 4, 8 only, so TP 3 or 6 is never found."""
    for tp in (1, 2, 4, 8):
        if tp <= gpus and gpus % tp == 0 and heads % tp == 0 and (weights + kv_cache) / tp <= gpu_bytes:
            return gpus // tp, tp
    return None


def calls_with_the_profiler_off(prompts, processes, batch_size):
    """Turns off a profiler that might watch for kit calls, then calls the kit."""
    sys.setprofile(None)
    return calls_on_busiest_rank(prompts, processes, batch_size)


def calls_in_another_thread(prompts, processes, batch_size):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(calls_on_busiest_rank, prompts, processes, batch_size).result()


def budget_with_the_profiler_off(lengths, new_tokens, budget):
    sys.setprofile(None)
    return budget_batches(lengths, new_tokens, budget)


def budget_in_another_thread(lengths, new_tokens, budget):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(budget_batches, lengths, new_tokens, budget).result()


def restore_sorted_duplicates_kept(shares, count):
    """Sorts, but keeps the padding's duplicates (10 prompts on 4 processes: index 9 three times)."""
    return sorted(tuple(pair) for share in shares for pair in share)


def restore_reversed(shares, count):
    return sorted(solutions.restore(shares, count), reverse=True)


def restore_one_dropped(shares, count):
    """Drops one real pair: not by text (the others keep duplicates of text too), just one too few."""
    return solutions.restore(shares, count)[:-1]


def squares_gathered_then_made_here() -> list[int]:
    """Gathers right, throws the gathered list away and returns one built in this process."""
    accelerator = Accelerator()
    gather_object([accelerator.process_index ** 2])
    return [rank * rank for rank in range(accelerator.num_processes)]


def squares_through_c10d() -> list[int]:
    """Correct, another way: all_gather_object imported from torch's distributed_c10d module."""
    from torch.distributed.distributed_c10d import all_gather_object

    accelerator = Accelerator()
    out = [None] * accelerator.num_processes
    all_gather_object(out, accelerator.process_index ** 2)
    return out


def one_prompt_per_batch(lengths, new_tokens, budget):
    return [[i] for i in range(len(lengths))]


@pytest.mark.parametrize("check, solution", [
    launched(exercises.check_squares, solutions.squares), launched(exercises.check_restore, solutions.restore),
    (exercises.check_calls, solutions.calls), (exercises.check_budget_batches, solutions.budget_batches),
    (exercises.check_layout, solutions.layout),
])
def test_check_accepts_the_solution(capsys, check, solution):
    assert check(solution) is True
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("check, solution", [
    launched(exercises.check_squares, squares_by_tensor_gather),
    launched(exercises.check_squares, squares_by_tensor_gather_as_list),
    launched(exercises.check_squares, squares_with_partial_state_and_a_tuple),
    launched(exercises.check_squares, squares_with_torch_itself),
    launched(exercises.check_squares, squares_through_c10d),
    launched(exercises.check_restore, restore_as_lists),
    (exercises.check_calls, lambda p, n, b: -(-(-(-p // n)) // b)),
    (exercises.check_budget_batches, budget_largest_first),
    (exercises.check_layout, layout_as_a_list),
])
def test_check_accepts_a_correct_answer_written_another_way(capsys, check, solution):
    for _ in range(3):  # the cases are drawn again on every call
        assert check(solution) is True
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("check, wrong, hint", [
    launched(exercises.check_squares, squares_without_a_list, "gather_object needs a list"),
    launched(exercises.check_squares, squares_local_only, "process 0 returned [0] without gathering"),
    launched(exercises.check_squares, squares_computed_in_one_process, "returned [0, 1"),
    launched(exercises.check_squares, squares_computed_in_one_process, "] without gathering"),
    launched(exercises.check_squares, squares_written_out, "returned [0, 1, 4] without gathering"),
    launched(exercises.check_squares, squares_through_the_kit, "the kit's what_each_process_sees gathered for you"),
    launched(exercises.check_squares, squares_gather_anything, "sent [[2]] to the gather"),
    launched(exercises.check_squares, squares_for_three, "return the gathered list"),
    launched(exercises.check_squares, not_done, "NotImplementedError"),
    launched(exercises.check_restore, lambda shares, count: [p for s in shares for p in s][:count],
     "10 prompts on 4 processes: every pair is there once, but in the order"),
    launched(exercises.check_restore, lambda shares, count: list(range(count)), "not just the numbers"),
    launched(exercises.check_restore, restore_by_text, "drop them by index"),
    launched(exercises.check_restore, restore_the_article, "take each pair from shares"),
    launched(exercises.check_restore, restore_the_lessons_shares, "take each pair from shares"),
    launched(exercises.check_restore, restore_for_the_fixed_cases, "10 prompts on 4 processes: every pair is there once"),
    launched(exercises.check_restore, lambda shares, count: sorted(restore_for_the_fixed_cases(shares, count)),
             "12 prompts on 5 processes: index 11 comes back 2 times"),
    (exercises.check_calls, lambda p, n, b: p / (n * b), "you said 6.25"),
    (exercises.check_calls, lambda p, n, b: math.ceil(p / b), "4 processes"),
    (exercises.check_calls, lambda p, n, b: p // (n * b) + 1, "for 96 prompts, 1 processes, batches of 16: you said 7"),
    (exercises.check_calls, lambda p, n, b: CALLS_TABLE.get((p, n, b)), "you said None"),
    (exercises.check_calls, calls_on_busiest_rank, "the kit's own calls_on_busiest_rank"),
    (exercises.check_calls, calls_via_the_kit, "the kit's own calls_on_busiest_rank"),
    (exercises.check_budget_batches, lambda lengths, new, budget: [[i] for i in range(len(lengths))][:-1],
     "missing or appear twice"),
    (exercises.check_budget_batches,
     lambda lengths, new, budget: [list(range(i, min(i + 16, len(lengths)))) for i in range(0, len(lengths), 16)],
     "more than 2048 padded tokens"),
    (exercises.check_budget_batches, one_prompt_per_batch, "batches, where filling"),
    (exercises.check_budget_batches, lambda lengths, new, budget: FIXED_BATCHES, "prompts you cannot know in advance"),
    (exercises.check_budget_batches, lambda lengths, new, budget: solutions.budget_batches(lengths, 0, budget),
     "rows x (longest prompt + new_tokens)"),
    (exercises.check_budget_batches, budget_batches, "the kit's own budget_batches"),
    (exercises.check_budget_batches, budget_with_the_lessons_numbers, "with the arguments you are given"),
    (exercises.check_budget_batches, lambda lengths, new, budget: solutions.budget_batches(lengths, new, 2048),
     "the arguments you are given"),
    (exercises.check_layout, lambda w, kv, gpu, n, heads: LAYOUT_TABLE.get((w, kv, gpu, n, heads), (1, 1)),
     "you said (1, 1)"),
    (exercises.check_layout, lambda w, kv, gpu, n, heads: solutions.layout(w, 0, gpu, n, heads),
     "40 heads: you said (2, 2): with TP 2 each GPU holds (weights + KV cache) / 2, more than one GPU's memory"),
    (exercises.check_layout, lambda w, kv, gpu, n, heads: solutions.layout(w, kv, gpu, n, math.factorial(8)),
     "12 heads: you said (1, 8), but no TP size that divides the GPUs and the heads fits one copy: return None"),
    (exercises.check_layout, lambda w, kv, gpu, n, heads: tuple(reversed(solutions.layout(w, kv, gpu, n, heads))),
     "you said (1, 4): that reads as (tp_size, replicas); return (replicas, tp_size)"),
    (exercises.check_layout, lambda w, kv, gpu, n, heads: best_layout(w + kv, gpu, n, heads),
     "the kit's own best_layout"),
    (exercises.check_layout, layout_strictly_below, "fills each GPU to the last byte, and that fits"),
    (exercises.check_layout, layout_powers_of_two, "on 6 x 24 GiB GPUs, 48 heads: you said None"),
    (exercises.check_calls, calls_with_the_profiler_off, "the kit's own calls_on_busiest_rank"),
    (exercises.check_calls, calls_in_another_thread, "the kit's own calls_on_busiest_rank"),
    (exercises.check_budget_batches, budget_with_the_profiler_off, "the kit's own budget_batches"),
    (exercises.check_budget_batches, budget_in_another_thread, "the kit's own budget_batches"),
    (exercises.check_restore, restore_sorted_duplicates_kept, "comes back 3 times"),
    (exercises.check_restore, restore_reversed, "in the order [9, 8, 7"),
    (exercises.check_restore, restore_one_dropped, "is missing: every index"),
    launched(exercises.check_squares, squares_gathered_then_made_here, "a list it made itself"),
])
def test_check_rejects_a_wrong_answer_with_a_hint(capsys, check, wrong, hint):
    assert check(wrong) is False
    out = capsys.readouterr().out
    assert out.startswith("✗ not yet:") and hint in out


def test_layout_hints_never_give_a_fixed_box_its_answer(capsys):
    """A hint that named the answer would let a learner fill a table box by box."""
    for wrong in ((lambda *box: (1, 1)), (lambda *box: None), (lambda *box: (3, 7))):
        assert exercises.check_layout(wrong) is False
        out = capsys.readouterr().out
        box = exercises.LAYOUT_CASES[0]
        assert repr(exercises.best_layout(box[0] + box[1], *box[2:])) not in out


def test_layout_hint_names_a_larger_tp_than_needed_when_it_is_not_the_answer_swapped():
    """(1, 4) where (2, 2) is right is no swap: the hint says a smaller TP fits; where (4, 1) is right, it is one."""
    hint = exercises.layout_hint((1, 4), 30 * exercises.GB, 0, 24 * exercises.GiB, 4, 32)
    assert "a smaller TP size also fits" in hint
    hint = exercises.layout_hint((1, 4), 10 * exercises.GB, 0, 24 * exercises.GiB, 4, 32)
    assert "that reads as (tp_size, replicas)" in hint


def test_kit_calls_are_seen_and_the_kit_is_left_as_it_was():
    """Watching for a kit call swaps the kit function's code for the check only: afterwards it is the same function."""
    code = calls_on_busiest_rank.__code__
    assert exercises.calls_into(calls_in_another_thread, (100, 4, 16), [calls_on_busiest_rank]) == \
        (calls_on_busiest_rank(100, 4, 16), "calls_on_busiest_rank")
    assert calls_on_busiest_rank.__code__ is code
    assert not any(key.startswith("__mgpu_lab") for key in calls_on_busiest_rank.__globals__)


def test_layout_hint_names_a_tp_size_that_does_not_divide_the_heads():
    hint = exercises.layout_hint((1, 8), 60 * exercises.GB, 0, 24 * exercises.GiB, 8, 12)
    assert "tp_size must divide both the 8 GPUs and the 12 heads" in hint
    assert exercises.layout_hint([2, 4], 60 * exercises.GB, 0, 24 * exercises.GiB, 8, 12) == ""


def test_calls_hints_never_give_a_fixed_case_its_answer(capsys):
    assert exercises.check_calls(lambda p, n, b: p // (n * b) + 1) is False
    out = capsys.readouterr().out
    assert "for 96 prompts, 1 processes, batches of 16: you said 7" in out and "6 calls" not in out


def test_a_gib_slip_is_caught_on_some_box():
    """Vendors' '24 GB' is 24 GiB: an answer that reads it as 10**9 bytes fails on a box near the edge."""
    assert exercises.check_layout(layout_in_gigabytes) is False


@pytest.mark.multiprocess
def test_padded_split_is_accelerates():
    """The restore check computes apply_padding's split itself; it must be accelerate's, uneven splits included."""
    for count, processes in [*exercises.RESTORE_CASES, (5, 4), (1, 3), (7, 7), (9, 2)]:
        assert [list(s) for s in exercises.padded_index_shares(count, processes)] == \
            exercises.padded_split(count, processes)


def test_checks_draw_new_cases_on_every_call():
    assert exercises.restore_cases() != exercises.restore_cases()
    assert exercises.budget_cases()[1:] != exercises.budget_cases()[1:]
    assert exercises.random_boxes(5) != exercises.random_boxes(5)
    assert batched_check.draw_case() != batched_check.draw_case()


@pytest.mark.multiprocess
def test_batched_function_check_accepts_the_solution_on_any_machine(capsys, monkeypatch):
    monkeypatch.setattr(launch_module, "count_gpus", lambda: 1)  # a one-GPU box: the check still runs 2 CPU processes
    assert exercises.check_batched_function(solutions.batched_on_each_process) is True
    assert capsys.readouterr().out.startswith("✓")


def a_case(processes=2, batch_size=3, count=8, max_new_tokens=16):
    """A fixed draw (the article's first lines, where rows end early), so a test's mistake shows on every run; the
    check itself draws a new one each time."""
    return batched_check.BatchedCase(default_prompts(repeat=1)[:count], max_new_tokens, batch_size, processes)


@pytest.mark.multiprocess
@pytest.mark.parametrize("mistake, hint", [
    ({"padding_side": "right"}, "pad on the left"),
    ({"pad_token": False}, "tokenizer.pad_token = tokenizer.eos_token"),
    ({"add_special_tokens": False}, "BOS is missing"),
    ({"cut_prompt": False}, "the prompt is still in the text"),
    ({"cut_eos": False}, "up to and including the first EOS"),
    ({"order": lambda rows: sorted(rows, reverse=True)}, "sort the gathered list by prompt index"),
    ({"gather": False}, "gather every process's results"),
    ({"split": False, "gather": False}, "gather every process's results"),
    ({"split": False}, "generated for 16 prompts in all, for 8 prompts"),
    ({"one_at_a_time": True}, "process 0 made 4 generate call(s) of [1, 1, 1, 1] rows for its 4 prompts"),
    ({"whole_share": True}, "process 0 made 1 generate call(s) of [4] rows for its 4 prompts; batch_size=3 means 2"),
    ({"new_tokens": 16}, "asked for max_new_tokens=[16], the check passed 9"),
    ({"no_mask": True}, "pass the attention mask"),
])
def test_batched_function_check_names_each_usual_mistake(capsys, mistake, hint):
    case = a_case(max_new_tokens=9 if "new_tokens" in mistake else 16)
    assert exercises.check_batched_function(batched_with(**mistake), case) is False
    out = capsys.readouterr().out
    assert out.startswith("✗ not yet:") and hint in out


@pytest.mark.multiprocess
def test_a_hard_coded_max_new_tokens_is_named_and_nothing_is_regenerated(capsys, monkeypatch):
    """The hint comes from the learner's own calls: the check makes no right-padded generate call of its own, whose
    transformers warning would land in the learner's cell though they padded left."""
    from transformers.generation.utils import GenerationMixin

    here, original = [], GenerationMixin.generate

    def recorded(self, *args, **kwargs):  # in this process only: the launched processes are forks with their own copy
        here.append(describe_call(self, args, kwargs))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", recorded)
    for _ in range(2):
        case = batched_check.draw_case()
        wrong = batched_with(new_tokens=case.max_new_tokens + 3)
        assert exercises.check_batched_function(wrong, case) is False
        assert "use the function's max_new_tokens argument" in capsys.readouterr().out
    assert here and not any(call.right_padded or call.bos_missing for call in here)


@pytest.mark.multiprocess
@pytest.mark.parametrize("style", [
    {"strided": True}, {"attribute_padding": True}, {"multiple_of_8": True}, {"as_lists": True},
    {"explicit_tensors": True}, {"via_config": True},
])
def test_batched_function_check_accepts_correct_answers_written_another_way(capsys, style):
    assert exercises.check_batched_function(batched_with(**style)) is True
    assert capsys.readouterr().out.startswith("✓")


def rows_from_elsewhere(folder, prompts, max_new_tokens, batch_size):
    """Ignores its input: returns rows made without generating (a table, a file, another run)."""
    return [(index, "", 0) for index in range(len(prompts))]


def batched_by_the_kit(folder, prompts, max_new_tokens, batch_size):
    """Lets the kit's generate_batched do the tokenizing and generating."""
    accelerator = Accelerator()
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with accelerator.split_between_processes(list(enumerate(prompts))) as share:
        made = generate_batched(model, tokenizer, [prompt for _, prompt in share], max_new_tokens, batch_size)
        results = [(index, c.text, c.generated_tokens) for (index, _), c in zip(share, made)]
    return sorted(gather_object(results))


@pytest.mark.multiprocess
@pytest.mark.parametrize("wrong, hint", [
    (rows_from_elsewhere, "made no generate call"),
    (batched_by_the_kit, "the kit's generate_batched did the work"),
])
def test_batched_function_check_wants_the_work_done_in_the_function(capsys, wrong, hint):
    assert exercises.check_batched_function(wrong) is False
    out = capsys.readouterr().out
    assert out.startswith("✗ not yet:") and hint in out


def process_0_does_it_all(by_shares: bool):
    """Wrong: process 0 generates every prompt (share by share, or the whole list), the others wait, then gather."""
    def batched(folder, prompts, max_new_tokens, batch_size):
        accelerator = Accelerator()
        model = AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        tokenizer.pad_token = tokenizer.eos_token
        items = list(enumerate(prompts)) if accelerator.is_main_process else []
        split = batched_check.contiguous_shares(len(items), accelerator.num_processes)
        shares = [[items[i] for i in share] for share in split] if by_shares and items else [items]
        results = []
        for share in shares:
            for start in range(0, len(share), batch_size):
                chunk = share[start:start + batch_size]
                batch = tokenizer([p for _, p in chunk], return_tensors="pt", padding=True, padding_side="left")
                output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=tokenizer.eos_token_id)
                for (index, _), new in zip(chunk, output[:, batch["input_ids"].shape[1]:].tolist()):
                    if tokenizer.eos_token_id in new:
                        new = new[:new.index(tokenizer.eos_token_id) + 1]
                    results.append((index, tokenizer.decode(new, skip_special_tokens=True), len(new)))
        return sorted(gather_object(results))
    return batched


@pytest.mark.multiprocess
@pytest.mark.parametrize("by_shares", [True, False])
def test_batched_function_check_wants_every_process_to_generate_its_share(capsys, by_shares):
    assert exercises.check_batched_function(process_0_does_it_all(by_shares), a_case()) is False
    out = capsys.readouterr().out
    assert out.startswith("✗ not yet:") and "process 0 generated for 8 prompts, where its share holds 4" in out


@pytest.mark.multiprocess
def test_padding_counted_after_eos_fails_on_every_random_draw(capsys):
    """Every draw plants a prompt that stops early inside a batch of several rows, so the mistake always shows."""
    for _ in range(2):
        assert exercises.check_batched_function(batched_with(cut_eos=False)) is False
        assert "up to and including the first EOS" in capsys.readouterr().out


def test_every_draw_puts_the_early_eos_prompt_in_a_shared_batch():
    for _ in range(50):
        case = batched_check.draw_case()
        position = case.prompts.index(batched_check.EARLY_EOS)
        assert position in batched_check.crowded_positions(len(case.prompts), case.processes, case.batch_size)
        assert case.max_new_tokens > batched_check.EARLY_EOS_TOKENS + 1
        strided = [list(range(rank, len(case.prompts), case.processes)) for rank in range(case.processes)]
        for shares in (case.shares(), strided):
            share = next(share for share in shares if position in share)
            start = share.index(position) // case.batch_size * case.batch_size
            assert len(share[start:start + case.batch_size]) > 1


def test_the_early_eos_prompt_stops_first():
    """EARLY_EOS ends after 8 new tokens with tiny; every other prompt of the pool runs longer, so its row is padded."""
    from mgpu_lab.engine.models import load_model

    model, tokenizer = load_model("tiny")
    pool = list(batched_check.prompt_pool())
    made = {p: c.generated_tokens for p, c in zip(pool, generate_batched(model, tokenizer, pool, 20, 16))}
    assert made[batched_check.EARLY_EOS] == batched_check.EARLY_EOS_TOKENS
    assert min(n for p, n in made.items() if p != batched_check.EARLY_EOS) > batched_check.EARLY_EOS_TOKENS + 1


@pytest.mark.multiprocess
def test_the_batched_mistakes_helper_without_mistakes_passes(capsys):
    """Guards the test above: each mistake is the only difference from a function the check accepts."""
    assert exercises.check_batched_function(batched_with(), a_case()) is True


@pytest.mark.parametrize("guess, actual, tolerance, mark", [
    (None, 5.5, 0.1, "? no prediction"), (5.4, 5.5, 0.1, "✓"), (3, 5.5, 0.1, "✗"),
    (["r", "a"], ["r", "a"], 0.0, "✓"), ("rank0", ["r", "a"], 0.0, "✗"),
])
def test_predict_marks_the_guess_and_shows_the_real_value(capsys, guess, actual, tolerance, mark):
    assert exercises.predict(guess, actual, tolerance) is (mark == "✓")
    out = capsys.readouterr().out
    assert out.startswith(mark) and f"the real value: {actual}" in out


def completion(index, token_ids):
    return Completion(index, "prompt", "text", token_ids, 3, len(token_ids), "length")


def test_compare_runs_counts_identical_and_says_where_the_others_part(capsys):
    these = [completion(0, [5, 6, 7]), completion(1, [5, 6, 7]), completion(2, [1, 2])]
    those = [completion(0, [5, 6, 7]), completion(1, [5, 9, 7]), completion(2, [1, 2])]
    assert exercises.compare_runs(these, those, "bfloat16") == 2
    out = capsys.readouterr().out
    assert "2/3 completions identical (bfloat16)" in out and "prompt 1 after 1 tokens" in out
    assert "half precision" in out
    assert exercises.compare_runs(these, these, "float32") == 3
    assert capsys.readouterr().out == "3/3 completions identical (float32)\n"
