import pytest

from scenimefy_jax.data import demo, pipeline


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A tiny demo data set in the official layout (shared by the training tests)."""
    root = tmp_path_factory.mktemp("demo_data")
    demo.write_demo_dataset(root, n_photos=12, n_anime=6, n_pairs=10, size=16, seed=3)
    return root


@pytest.fixture(scope="session")
def demo_sources(demo_root):
    return pipeline.folder_sources(str(demo_root / "unpaired_s2a"), str(demo_root / "pair_s2a"))
