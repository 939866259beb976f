"""Data-stream positions carried across host and worker counts (scenimefy_jax/data/iterator_state.py),
checked on the real training pipeline: the regrouped iterators continue with exactly the items an
uninterrupted one-host stream gives next."""
import os

import pytest

from scenimefy_jax.data import demo, iterator_state, pipeline
from scenimefy_jax.data.image_files import ConfigError

GLOBAL_BATCH = 4


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    demo.write_demo_dataset(root, n_photos=12, n_anime=6, n_pairs=10, size=16, seed=3)
    return pipeline.folder_sources(str(root / "unpaired_s2a"), str(root / "pair_s2a"))


def _iterator(sources, host, hosts, workers=0):
    dataset, _ = pipeline.make_train_dataset(sources, image_size=16, global_batch=GLOBAL_BATCH, seed=0,
                                            num_workers=workers, process_index=host, process_count=hosts)
    return iter(dataset)


def _positions(iterators, batches):
    """The global positions of the next `batches` global batches read from `iterators` (one per host)."""
    out = []
    for _ in range(batches):
        out.append(sorted(int(p) for it in iterators for p in next(it)["position"]))
    return out


def test_plain_state_counts_items():
    assert iterator_state.consumed({"next_index": 7}) == 7
    assert iterator_state.at(5, {"next_index": 0}) == {"next_index": 5}


def test_mp_prefetch_state_round_trips():
    template = {"next_index_in_cycle": 0, "next_index_in_datasets": 3, "iterators_in_use_indices": [0, 1, 2],
                "iterators_in_use_states": [{"next_index": 0}] * 3, "exhausted": [0, 0, 0], "future_states": {}}
    for count in range(10):
        state = iterator_state.at(count, template)
        assert iterator_state.consumed(state) == count
    # Worker w decodes w, w+3, ...: after 5 items, workers 0 and 1 have done 2, worker 2 one, 2 is next.
    state = iterator_state.at(5, template)
    assert [w["next_index"] for w in state["iterators_in_use_states"]] == [2, 2, 1]
    assert state["next_index_in_cycle"] == 2
    with pytest.raises(iterator_state.StateMismatch, match="not at one position"):
        iterator_state.consumed(dict(state, next_index_in_cycle=0))


def test_two_hosts_regrouped_onto_one_continue_the_global_stream(sources):
    straight = _iterator(sources, 0, 1)
    expected = _positions([straight], 5)
    hosts = [_iterator(sources, h, 2) for h in range(2)]
    assert _positions(hosts, 3) == expected[:3]  # two hosts together read the one-host stream
    saved = [it.get_state() for it in hosts]
    resumed = _iterator(sources, 0, 1)
    resumed.set_state(iterator_state.regroup(saved, 0, 1, resumed.get_state()))
    assert _positions([resumed], 2) == expected[3:]
    # And back: one host's position split over two.
    again = [_iterator(sources, h, 2) for h in range(2)]
    for h, it in enumerate(again):
        it.set_state(iterator_state.regroup([resumed.get_state()], h, 2, it.get_state()))
    assert _positions(again, 1) == _positions([straight], 1)


def test_no_workers_state_resumes_with_decoding_workers(sources):
    """The checkpoint of a `num_workers=0` run continues in a run with 2 decoding processes (and back)."""
    straight = _iterator(sources, 0, 1)
    expected = _positions([straight], 4)
    plain = _iterator(sources, 0, 1)
    _positions([plain], 3)
    with_workers = _iterator(sources, 0, 1, workers=2)
    try:
        with_workers.set_state(iterator_state.regroup([plain.get_state()], 0, 1, with_workers.get_state()))
        assert _positions([with_workers], 1) == expected[3:]
        back = _iterator(sources, 0, 1)
        back.set_state(iterator_state.regroup([with_workers.get_state()], 0, 1, back.get_state()))
    finally:
        with_workers.close()
    assert _positions([back], 1) == _positions([straight], 1)


def test_refused_when_hosts_read_different_counts_or_the_position_does_not_split():
    with pytest.raises(iterator_state.StateMismatch, match=r"different numbers of items \(\[3, 4\]"):
        iterator_state.regroup([{"next_index": 3}, {"next_index": 4}], 0, 1, {"next_index": 0})
    with pytest.raises(iterator_state.StateMismatch, match="item 9, which does not split evenly over 2 hosts"):
        iterator_state.regroup([{"next_index": 3}] * 3, 0, 2, {"next_index": 0})
    with pytest.raises(iterator_state.StateMismatch, match="unknown data-iterator state"):
        iterator_state.consumed({"something": 1})
    assert issubclass(iterator_state.StateMismatch, ConfigError)  # one line and exit status 2 in main



def _checkpoint(tmp_path, iterator, step=3):
    import jax.numpy as jnp

    from scenimefy_jax.training import checkpointing

    ckpt = checkpointing.Checkpointer(tmp_path / "checkpoints", save_every=1, async_save=False)
    ckpt.save(step, {"a": jnp.zeros(2)}, iterator, {})
    ckpt.close()
    return tmp_path / "checkpoints" / str(step) / "data"


def _restore(tmp_path, iterator, step=3):
    import jax.numpy as jnp

    from scenimefy_jax.training import checkpointing

    ckpt = checkpointing.Checkpointer(tmp_path / "checkpoints", save_every=1, async_save=False)
    try:
        ckpt.restore(step, {"a": jnp.zeros(2)}, iterator)
    finally:
        ckpt.close()


def test_checkpointer_resumes_a_two_host_checkpoint_on_one_host(sources, tmp_path):
    """Through `Checkpointer.restore`: a checkpoint whose data folder holds two hosts' states (here
    written as a two-host run leaves them: process_<i>-of-2.json) continues the global stream."""
    import json

    expected = _positions([_iterator(sources, 0, 1)], 4)
    hosts = [_iterator(sources, h, 2) for h in range(2)]
    _positions(hosts, 3)
    folder = _checkpoint(tmp_path, hosts[0])
    os.replace(folder / "process_0-of-1.json", folder / "process_0-of-2.json")
    (folder / "process_1-of-2.json").write_text(json.dumps(hosts[1].get_state()))
    resumed = _iterator(sources, 0, 1, workers=0)
    _restore(tmp_path, resumed)
    assert _positions([resumed], 1) == expected[3:]
    # A set that is not complete is refused by name, as a usage error (exit status 2 in main).
    os.remove(folder / "process_1-of-2.json")
    with pytest.raises(ConfigError, match=r"cannot resume the data stream of checkpoint .*3: expected one "
                                          r"complete set of process_<i>-of-<n>\.json, found \['process_0-of-2\.json'\]"):
        _restore(tmp_path, _iterator(sources, 0, 1))
