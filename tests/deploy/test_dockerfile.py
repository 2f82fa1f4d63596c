"""The Dockerfile: lint-clean, and every pip install in it is held to constraints.txt (the set
`make install` installs). tests/deploy/test_image.py builds it and checks the installed set."""

import re
import subprocess
from pathlib import Path


def test_hadolint_passes(repo_root, tools):
    result = subprocess.run([tools.find("hadolint"), "Dockerfile"], cwd=repo_root,
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def pip_installs(dockerfile: str) -> list[list[str]]:
    """The arguments of every `pip install` in the Dockerfile's RUN lines."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    return [m.group(1).split() for m in re.finditer(r"\bpip install\b([^&;\n]*)", joined)]


def test_pip_installs_are_constrained_or_add_no_dependencies(repo_root):
    installs = pip_installs(Path(repo_root / "Dockerfile").read_text())
    assert len(installs) >= 2, installs
    for words in installs:
        constrained = "-c" in words and words[words.index("-c") + 1] == "constraints.txt"
        assert constrained or "--no-deps" in words, words


def test_pip_install_finder_sees_unconstrained_installs():
    text = "RUN pip install -c constraints.txt -r r.txt \\\n && pip install whisperx\n"
    assert pip_installs(text) == [["-c", "constraints.txt", "-r", "r.txt"],
                                  ["whisperx"]]
