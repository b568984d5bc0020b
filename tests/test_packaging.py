"""environment.yml and the Dockerfile, read (no conda or Docker engine runs here)."""

import re
from pathlib import Path

import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch", "opencv-python-headless": "opencv", "lmdb": "python-lmdb",
               "matplotlib": "matplotlib-base"}


def bounds(spec: str) -> tuple[str, str]:
    """'numpy>=1.24,<3' or 'numpy >=1.24,<3' -> ('numpy', '>=1.24,<3')."""
    name, rest = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(.*)", spec).groups()
    return name.lower(), rest.replace(" ", "")


def test_environment_yml_has_the_same_dependencies_and_bounds_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = dict(bounds(d) for d in project["dependencies"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = dict(bounds(d) for d in env["dependencies"] if isinstance(d, str))
    assert {"python", "gdal", "pip"} <= conda.keys()
    assert conda["python"] == project["requires-python"] + ",<3.13"
    for name, spec in wanted.items():
        assert conda.get(CONDA_NAMES.get(name, name)) == spec, name
    extra = set(conda) - {CONDA_NAMES.get(n, n) for n in wanted} - {"python", "gdal", "pip"}
    assert not extra, f"environment.yml lists {extra}, which pyproject.toml does not"


def test_dockerfile_is_a_cuda_runtime_with_tmux_a_user_and_the_vqae_entrypoint():
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", text, flags=re.M).group(1)
    assert base.startswith("pytorch/pytorch:") and "cuda" in base and base.endswith("runtime")
    assert re.search(r"apt-get install[^\n]*\btmux\b", text)
    assert re.search(r"^RUN useradd .*\bvqae\b", text, flags=re.M)
    assert re.search(r"^USER vqae$", text, flags=re.M)
    assert 'ENTRYPOINT ["vqae"]' in text
    for path in re.findall(r"^COPY (.+?) \S+$", text, flags=re.M):
        for name in path.split():
            assert (REPO / name).exists(), f"Dockerfile copies {name}, which does not exist"
