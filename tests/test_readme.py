"""The README's Python snippets run as written (with fewer steps)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block.replace("3000", "5"), "README.md", "exec"), namespace)
    assert len(namespace["history"]) == 5
    assert (tmp_path / "runs" / "ls" / "checkpoint.pt").exists()
    assert namespace["samples"].shape == (500, 2)
