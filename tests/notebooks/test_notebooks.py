"""The notebooks in notebooks/ run top to bottom on CPU with `demo = True`, and are committed clean.

Each notebook is executed as papermill would: a cell setting `demo = True` is inserted after the cell
tagged `parameters`, and every cell runs in a fresh kernel (this interpreter, through ipykernel) whose
working directory is a temporary folder, so nothing is written into the repository. Any cell that raises
fails the test with the cell's traceback.
"""
import glob
import json
import os
import sys

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
CELL_TIMEOUT = 1200  # seconds per cell; the slowest demo stage compiles for minutes on 2 shared cores


def _parameters_cells(nb):
    return [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]


def _kernel_manager(tmp_path):
    """A kernel on this interpreter. The `python3` kernelspec that ipykernel installs runs whatever
    `python` is first on PATH, which need not be the one that has this package."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = tmp_path / "kernels" / "scenimefy-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "scenimefy-jax tests", "language": "python"}))
    return KernelManager(kernel_name="scenimefy-test",
                         kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]))


def execute_demo(name, tmp_path, monkeypatch):
    """Runs notebooks/<name> with demo = True in tmp_path/work; returns the executed notebook."""
    from nbclient import NotebookClient

    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    (parameters,) = _parameters_cells(nb)
    injected = nbformat.v4.new_code_cell("demo = True")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(nb.cells.index(parameters) + 1, injected)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # one CPU device, as the timings in the notebooks assume
    km = _kernel_manager(tmp_path)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(work)}})
    try:
        client.execute()  # raises CellExecutionError (with the cell's source and traceback) on any error
    finally:
        # nbclient shuts down only kernels it started itself; this one (GBs of JAX state) would
        # otherwise outlive the test.
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    return nb, work


def _outputs_text(nb):
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") or "".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


def _shown_images(nb):
    return sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))


def test_translate_notebook_runs_in_demo_mode(tmp_path, monkeypatch):
    nb, work = execute_demo("translate.ipynb", tmp_path, monkeypatch)
    photos = sorted(os.listdir(work / "demo_inputs" / "unpaired_s2a" / "trainA"))
    assert len(photos) == 3
    assert sorted(os.listdir(work / "anime")) == sorted(os.path.splitext(p)[0] + ".png" for p in photos)
    assert _shown_images(nb) == 3  # one photo | anime pair per photo
    assert "images/s at 64x64" in _outputs_text(nb)
    assert not (set(os.listdir(ROOT)) & {"anime", "demo_inputs", "demo_translator"})  # nothing in the repo


def test_committed_notebooks_are_clean_and_parameterised():
    paths = sorted(glob.glob(os.path.join(NOTEBOOKS, "*.ipynb")))
    assert [os.path.basename(p) for p in paths] == ["pipeline.ipynb", "train_translator.ipynb", "translate.ipynb"]
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)  # raises ValidationError
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (path, cell.source[:60])
        parameters = _parameters_cells(nb)
        assert len(parameters) == 1, path
        assert any(line.split("#")[0].strip() == "demo = False" for line in parameters[0].source.splitlines()), path


@pytest.mark.slow  # 43-65 s measured on 2 shared cores (most of it compiling the translation step)
def test_train_translator_notebook_runs_in_demo_mode(tmp_path, monkeypatch):
    nb, work = execute_demo("train_translator.ipynb", tmp_path, monkeypatch)
    run = work / "runs" / "i2i_notebook"
    records = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["step"] for r in records if "G" in r] == [3, 6, 9, 12]  # 4 epochs of 3 steps, a report every 3
    assert sorted(int(s) for s in os.listdir(run / "checkpoints") if s.isdigit())[-1] == 12
    assert os.path.isdir(run / "translator")
    results = json.load(open(run / "eval" / "results.json"))
    assert results["n_fake"] == results["n_real"] == 8
    assert f"'fid': {results['fid']}" in _outputs_text(nb)
    assert _shown_images(nb) == 3  # loss curves, the last grid, photo | translated


@pytest.mark.slow  # the four jobs compile a StyleGAN step, the pair step, the translation step and Inception
def test_pipeline_notebook_runs_in_demo_mode(tmp_path, monkeypatch):
    nb, work = execute_demo("pipeline.ipynb", tmp_path, monkeypatch)
    runs = work / "runs" / "pipeline"
    assert os.path.isdir(runs / "stylegan" / "generator") and os.path.isfile(runs / "stylegan" / "samples.png")
    summary = json.load(open(runs / "pairs" / "summary.json"))
    assert summary["complete"] and summary["num_pairs"] == 8
    assert sorted(os.listdir(runs / "pairs" / "trainA")) == sorted(os.listdir(runs / "pairs" / "trainB"))
    assert len(os.listdir(runs / "pairs" / "trainA")) == 8
    records = [json.loads(line) for line in open(runs / "translator" / "metrics.jsonl")]
    assert [r["step"] for r in records if "G_GAN_p" in r] == [4, 8, 12, 16]  # 4 epochs of 8 photos at batch 2
    results = json.load(open(runs / "eval" / "results.json"))
    assert results["n_fake"] == results["n_real"] == 8 and len(os.listdir(runs / "eval" / "translated")) == 8
    assert f"'fid': {results['fid']}" in _outputs_text(nb)
    # samples + loss curves, kept + rejected + histogram, loss curves + grid, photo | translated rows
    assert _shown_images(nb) == 8
