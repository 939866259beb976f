"""Data-stream positions in grain iterator states, so that a checkpoint resumes on another number of
hosts or decoding workers.

A training stream (`pipeline.make_train_dataset`, `single_domain.make_dataset`) is a function of the
item position alone: host `h` of `H` reads the positions `h, h+H, h+2H, ...` of one global sequence.
What a host's iterator state records is therefore one number, the count `k` of its positions consumed,
in one of two shapes grain gives it:

* `{"next_index": k}`: decoding in the training process (`data.num_workers = 0`);
* `mp_prefetch` over `W` workers: worker `w` decodes the host's positions `w, w+W, ...`, and the state
  holds each worker's own `next_index` and the worker whose item comes next (`next_index_in_cycle`).

When every host consumed the same `k` (always, unless unreadable files were skipped), the `H` hosts
together consumed exactly the global positions `0 .. kH-1`, and `H'` new hosts resume at `kH / H'`
each: the same stream an uninterrupted run reads. `regroup` does this and refuses, naming the reason,
where it cannot be exact.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from scenimefy_jax.data.image_files import ConfigError


class StateMismatch(ConfigError):
    """A saved data-iterator state that cannot be carried over exactly to this run's hosts and workers
    (a usage error: the job exits with status 2 and this one line)."""


def _is_plain(state: Mapping[str, Any]) -> bool:
    return set(state) == {"next_index"}


def _is_interleaved(state: Mapping[str, Any]) -> bool:
    return {"next_index_in_cycle", "iterators_in_use_states"} <= set(state)


def consumed(state: Mapping[str, Any]) -> int:
    """How many of its positions the host's iterator with `state` has consumed."""
    if _is_plain(state):
        return int(state["next_index"])
    if _is_interleaved(state):
        workers = state["iterators_in_use_states"]
        if list(state.get("iterators_in_use_indices", range(len(workers)))) != list(range(len(workers))) or any(
                state.get("exhausted", [])) or state.get("future_states"):
            raise StateMismatch(f"an mp_prefetch state with workers not in their starting order: {state}")
        counts = [consumed(w) for w in workers]
        total = sum(counts)
        if counts != [len(range(w, total, len(counts))) for w in range(len(counts))] or (
                int(state["next_index_in_cycle"]) != total % len(counts)):
            raise StateMismatch(f"an mp_prefetch state whose workers are not at one position: {state}")
        return total
    raise StateMismatch(f"an unknown data-iterator state (keys {sorted(state)})")


def at(count: int, template: Mapping[str, Any]) -> dict[str, Any]:
    """The state, shaped like `template` (the fresh iterator's own state), of an iterator that has
    consumed `count` of its positions."""
    if _is_plain(template):
        return {"next_index": int(count)}
    if _is_interleaved(template):
        workers = template["iterators_in_use_states"]
        n = len(workers)
        return dict(template, next_index_in_cycle=count % n, next_index_in_datasets=n,
                    iterators_in_use_indices=list(range(n)), exhausted=[0] * n, future_states={},
                    iterators_in_use_states=[at(len(range(w, count, n)), workers[w]) for w in range(n)])
    raise StateMismatch(f"an unknown data-iterator state (keys {sorted(template)})")


def regroup(saved: Sequence[Mapping[str, Any]], process_index: int, process_count: int,
            template: Mapping[str, Any]) -> dict[str, Any]:
    """This host's state, given the states `saved[h]` of the hosts that wrote the checkpoint.

    Exact: the new hosts together continue at the global position where the old ones stopped.
    Raises `StateMismatch` when the old hosts had consumed different counts (skipped unreadable
    items) or the global position does not split evenly over `process_count` hosts.
    """
    counts = [consumed(s) for s in saved]
    if len(set(counts)) != 1:
        raise StateMismatch(
            f"the {len(saved)} hosts that wrote it had read different numbers of items ({counts}; unreadable items "
            f"were skipped), so the stream cannot be split over {process_count} hosts exactly: resume with "
            f"{len(saved)} processes")
    position = counts[0] * len(saved)
    if position % process_count:
        raise StateMismatch(f"the stream stopped at item {position}, which does not split evenly over "
                            f"{process_count} hosts: resume with {len(saved)} processes")
    return at(position // process_count, template)
