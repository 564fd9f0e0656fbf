"""The analysis notebooks run top to bottom (nbclient) against the tiny real study of
test_analysis; any cell error fails. Committed notebooks carry no outputs."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from test_analysis import tiny_analysis_study

NOTEBOOKS = Path(__file__).resolve().parents[1] / "analysis" / "notebooks"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return tiny_analysis_study(tmp_path_factory)


def _outputs(nb) -> str:
    """Every text a cell produced (streams, plain-text/markdown results), and image counts."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts.append(out.data.get("text/markdown", "") + out.data.get("text/plain", ""))
                if "image/png" in out.data:
                    parts.append("<image/png>")
    return "\n".join(parts)


def _run(name: str, study: Path, tmp_path: Path, monkeypatch) -> str:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    monkeypatch.setenv("SRSTUDY_WORKDIR", str(study))  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return _outputs(nb)


@pytest.mark.parametrize("name", ["explore_front.ipynb", "paper_findings.ipynb"])
def test_committed_notebooks_have_no_outputs_and_a_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), f"strip the outputs of {name}"
    assert any("parameters" in c.metadata.get("tags", []) for c in code)


def test_explore_front_runs_top_to_bottom(study, tmp_path, monkeypatch):
    text = _run("explore_front.ipynb", study, tmp_path, monkeypatch)
    assert "front:" in text and "hypervolume" in text and "knee:" in text
    assert text.count("<image/png>") >= 2  # pairwise front, hypervolume over the study


def test_paper_findings_runs_top_to_bottom_and_says_energy_is_absent(study, tmp_path, monkeypatch):
    text = _run("paper_findings.ipynb", study, tmp_path, monkeypatch)
    # trials ran on CPU: no energy columns, said so, never zeros
    assert "GPU energy was not measured in this study" in text
    assert "absent (not measured, not 0): gpu_energy_j" in text
    assert "measured == analytic for all" in text
    assert "litesr_student: 4×2, r=2: params(C) = 93·C² + 1429·C + 48" in text
    assert "litesr_student at C = 32: 141008 params" in text  # the README's model table
    assert text.count("<image/png>") >= 3
