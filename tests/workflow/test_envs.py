"""The conda envs parse and pin the same versions as pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import yaml

# conda-forge names that differ from the PyPI names in pyproject.toml
CONDA_TO_PYPI = {"simpleitk": "simpleitk", "pillow": "pillow", "pytorch": "torch"}


def pyproject_pins(repo_root) -> dict[str, str]:
    with open(repo_root / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)["project"]
    deps = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    pins = {}
    for dep in deps:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^;\s]+)", dep.strip()).groups()
        pins[name.lower().replace("_", "-")] = version
    return pins


def env_pins(path) -> dict[str, str]:
    with open(path) as handle:
        env = yaml.safe_load(handle)
    pins = {}
    for dep in env["dependencies"]:
        specs = dep["pip"] if isinstance(dep, dict) else [dep]
        for spec in specs:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*={1,2}\s*([^=\s]+)", spec)
            if match:
                name = match.group(1).lower().replace("_", "-")
                pins[CONDA_TO_PYPI.get(name, name)] = match.group(2)
    return pins


def test_every_env_parses_and_pins_match_pyproject(repo_root):
    pins = pyproject_pins(repo_root)
    envs = sorted((repo_root / "envs").glob("*.yaml"))
    assert envs, "no conda envs in envs/"
    for path in envs:
        found = env_pins(path)
        assert found, f"{path.name} pins nothing"
        for name, version in found.items():
            if name == "python":
                continue
            assert name in pins, f"{path.name}: {name} is not a pinned dependency in pyproject"
            assert pins[name] == version, f"{path.name}: {name}={version}, pyproject {pins[name]}"


def test_every_rule_names_an_existing_env(repo_root):
    for smk in (repo_root / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (smk.parent / env).resolve().is_file(), f"{smk.name}: {env} missing"
