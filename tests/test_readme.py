"""The README's Python API example runs as printed, scaled down to tiny sizes."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
ARCHITECTURE = README.parent / "docs" / "ARCHITECTURE.md"

#: What makes the example take seconds instead of minutes; each must still be in the README as printed.
SCALE_DOWN = {
    'load_dataset("synthetic")': 'load_dataset("synthetic:classes=2,per_class=25,size=32")',
    'train_classifier(bundle, "smallcnn")': 'train_classifier(bundle, "smallcnn", epochs=1, device="cpu")',
    'CAEConfig.preset("small", image_size=64,': 'CAEConfig.preset("tiny", image_size=32,',
    'TrainConfig.preset("small", dc="classifier")': 'TrainConfig.preset("tiny", dc="classifier", device="cpu")',
    'steps=16)': 'steps=4)',
}


def _python_block(document: Path, heading: str) -> str:
    section = document.read_text(encoding="utf-8").split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, f"{document.name}: no python block under {heading!r}"
    return match.group(1)


def _run_scaled_down(code: str, document: Path, scale_down: dict[str, str]) -> dict[str, object]:
    """Run the example from a file of its own in the current folder (TorchScript reads a class's source from its
    file), with each of ``scale_down``'s printed texts replaced."""
    for printed, scaled in scale_down.items():
        assert printed in code, f"{document.name} example changed: {printed!r} not found; update the test"
        code = code.replace(printed, scaled)
    script = Path(f"{document.stem.lower()}_example.py")
    script.write_text(code, encoding="utf-8")
    return runpy.run_path(str(script))


def test_python_api_example_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the example writes runs/clf and runs/cae
    namespace = _run_scaled_down(_python_block(README, "## Python API"), README, SCALE_DOWN)
    exp, maps, every = namespace["exp"], namespace["maps"], namespace["every"]
    assert exp.saliency.shape == (8, 32, 32) and exp.frames.shape[:2] == (8, 4)
    assert maps.shape == (8, 32, 32) and every.shape == (8, 1, 32, 32)  # 2 classes scaled down: 1 other
    assert (tmp_path / "runs" / "cae" / "model.safetensors").is_file()
    assert len(list((tmp_path / "runs" / "explained").glob("image*.json"))) == 8


@pytest.mark.parametrize("command", ["pip install -e . && caex demo",
                                     'pip install -e ".[test]" && python -m pytest -q'])
def test_quickstart_has_the_two_commands(command) -> None:
    quickstart = README.read_text(encoding="utf-8").split("## Quickstart", 1)[1].split("##", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quickstart, flags=re.DOTALL).group(1)
    assert block.strip().splitlines().count(command) == 1 and len(block.strip().splitlines()) == 2


def test_the_extension_example_registers_a_method_and_an_architecture_that_evaluate_uses(tmp_path,
                                                                                        monkeypatch) -> None:
    from caex.classifier import ARCHITECTURES
    from caex.explain.attribution import BASELINES

    monkeypatch.chdir(tmp_path)
    scale_down = {"per_class=100": "per_class=20", 'train_classifier(bundle, "tinyvgg")':
                  'train_classifier(bundle, "tinyvgg", epochs=1, device="cpu")'}
    command = ("evaluate none synthetic:classes=2,per_class=100 --size 32 --classifier runs/tinyvgg --methods "
               "gradient_x_input,gradcam --out eval/")
    assert command in " ".join(ARCHITECTURE.read_text(encoding="utf-8").split()), "the CLI route changed"
    try:
        namespace = _run_scaled_down(_python_block(ARCHITECTURE, "## Extending caex"), ARCHITECTURE, scale_down)
        from caex.cli.main import main  # in the process that registered them, as the docs say

        assert main([*command.replace("per_class=100", "per_class=20").split(), "--n-images", "4"]) == 0
        assert "| gradient_x_input |" in (tmp_path / "eval" / "results.md").read_text(encoding="utf-8")
    finally:
        BASELINES.pop("gradient_x_input", None)
        ARCHITECTURES.pop("tinyvgg", None)
    results = namespace["res"]
    assert [row.method for row in results.methods] == ["gradient_x_input", "gradcam", "random"]
    assert all(row.status == "ok" for row in results.methods)
    assert "| gradient_x_input |" in results.to_markdown()
    insertion = namespace["insertion"]
    assert sorted(insertion) == ["gradcam", "gradient_x_input", "random"]
    assert all(0 <= value <= 1 for value in insertion.values())

