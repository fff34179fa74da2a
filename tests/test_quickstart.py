"""The quickstart example, as a script and as the notebook, runs offline after the README's install command."""

import pytest


@pytest.mark.slow
def test_quickstart_runs_offline_and_writes_its_figure(tmp_path):
    import pathlib
    import runpy

    script = pathlib.Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    module = runpy.run_path(str(script), run_name="quickstart")
    result = module["main"](["--out", str(tmp_path / "fig.png")])
    assert (tmp_path / "fig.png").stat().st_size > 10_000
    assert result["mmd_generated"] >= result["mmd_floor"] > 0


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path):
    import pathlib

    import nbclient
    import nbformat

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "MMD(zero-shot samples, held-out)" in text and "MMD(refined samples, held-out)" in text
    assert "empirical noise: MMD" in text and "gaussian  noise: MMD" in text
    assert "95 % bootstrap interval" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3
