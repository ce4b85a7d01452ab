"""The README's Python API example runs as printed, scaled down to tiny sizes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

#: What makes the example take seconds instead of minutes; each must still be in the README as printed.
SCALE_DOWN = {
    'load_dataset("synthetic")': 'load_dataset("synthetic:classes=2,per_class=25,size=32")',
    'train_classifier(bundle, "smallcnn")': 'train_classifier(bundle, "smallcnn", epochs=1, device="cpu")',
    'CAEConfig.preset("small", image_size=64,': 'CAEConfig.preset("tiny", image_size=32,',
    'TrainConfig.preset("small", dc="classifier")': 'TrainConfig.preset("tiny", dc="classifier", device="cpu")',
    'steps=16)': 'steps=4)',
}


def _python_api_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, "README: no python block under '## Python API'"
    return match.group(1)


def test_python_api_example_runs(tmp_path, monkeypatch) -> None:
    code = _python_api_example()
    for printed, scaled in SCALE_DOWN.items():
        assert printed in code, f"README example changed: {printed!r} not found; update SCALE_DOWN"
        code = code.replace(printed, scaled)
    monkeypatch.chdir(tmp_path)  # the example writes runs/clf and runs/cae
    namespace: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), namespace)
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
