"""The README's Python example runs as printed (on the bundled MovieLens-100k)."""

import ast
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("recbole", reason="MovieLens-100k ships inside the RecBole wheel")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README lost its Python example"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {})  # noqa: S102 - our own README
    titles = ast.literal_eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(titles) == 10 and all(isinstance(t, str) and t for t in titles)
    assert (tmp_path / "models" / "my-stack" / "model.json").is_file()
