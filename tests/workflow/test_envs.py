"""The conda envs: pinned like pyproject.toml, one per rule, providing what jobs import."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import yaml

from medsegflow import resources as res

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
    """``{package: version}`` of an env file; fails on any spec that is not an exact pin."""
    with open(path, encoding="utf-8") as handle:
        env = yaml.safe_load(handle)
    pins = {}
    for dep in env["dependencies"]:
        specs = dep["pip"] if isinstance(dep, dict) else [dep]
        for spec in specs:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*={1,2}\s*([^=<>*\s]+)", spec)
            assert match, f"{path.name}: '{spec}' is not pinned to one version"
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
        assert set(found) >= {"python", "pip"}, f"{path.name}: python and pip must be pinned"
        for name, version in found.items():
            if name == "python":
                assert version in ("3.10", "3.11", "3.12"), f"{path.name}: python {version}"
                continue
            if name == "pip":  # the installer, not a dependency of the project
                continue
            assert name in pins, f"{path.name}: {name} is not a pinned dependency in pyproject"
            assert pins[name] == version, f"{path.name}: {name}={version}, pyproject {pins[name]}"


def rule_blocks(repo_root) -> dict[str, tuple[Path, str]]:
    """``{rule: (rule file, text of its block)}`` for every rule in rules/*.smk."""
    blocks = {}
    for smk in sorted((repo_root / "rules").glob("*.smk")):
        parts = re.split(r"^rule (\w+):\n", smk.read_text(encoding="utf-8"), flags=re.M)
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            blocks[name] = (smk, body.split("\n\n\n")[0])
    return blocks


def rule_envs(repo_root) -> dict[str, list[Path]]:
    """Env files each rule may run in: its ``conda:`` file, or every env of ``get_method_env``."""
    envs = {}
    for name, (smk, body) in rule_blocks(repo_root).items():
        if not re.search(r"^    (script|shell|wrapper|notebook):", body, flags=re.M):
            continue  # target-only rules (all) run nothing
        match = re.search(r"^    conda:\n\s+(\S+)\n", body, flags=re.M)
        assert match, f"{smk.name}: rule {name} has no conda: directive"
        value = match.group(1)
        if value == "get_method_env":
            files = {res.family_env(family) for family in res.family_runtimes()}
        else:
            assert value.startswith('"'), f"{smk.name}: rule {name}: unknown conda: {value}"
            files = {value.strip('"')}
        envs[name] = sorted((smk.parent / f).resolve() for f in files)
    return envs


def test_every_rule_names_an_existing_env(repo_root):
    envs = rule_envs(repo_root)
    assert {"prepare_dataset", "predict_method", "plot_metric"} <= set(envs)
    for rule, files in envs.items():
        for path in files:
            assert path.is_file(), f"rule {rule}: {path} missing"
            assert path.parent == repo_root / "envs", f"rule {rule}: {path} outside envs/"


def _third_party(module: str) -> str | None:
    top = module.split(".")[0]
    return None if top in sys.stdlib_module_names or top in ("medsegflow", "snakemake") else top


def module_imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Absolute module names imported by a file (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_file(repo_root: Path, module: str) -> Path | None:
    """The source file of a ``medsegflow`` module (a package's ``__init__.py``)."""
    path = repo_root.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def startup_imports(repo_root: Path, script: Path) -> set[str]:
    """Third-party modules a script needs to start: module-level imports, transitively
    through medsegflow (and the ``__init__`` of every package on the way)."""
    seen, todo, third = set(), [script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in module_imports(path, top_level_only=True):
            if _third_party(name):
                third.add(_third_party(name))
            elif name.startswith("medsegflow"):
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    found = module_file(repo_root, ".".join(parts[:i]))
                    if found:
                        todo.append(found)
    return third


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distribution(module: str) -> str:
    dists = _distributions().get(module)
    assert dists, f"imported module {module} belongs to no installed distribution"
    return dists[0].lower().replace("_", "-")


def test_each_rule_env_provides_what_its_script_imports(repo_root):
    envs = rule_envs(repo_root)
    checked = {}
    for rule, (smk, body) in rule_blocks(repo_root).items():
        script = re.search(r'^    script:\n\s+"([^"]+)"', body, flags=re.M)
        if not script:
            continue
        needed = {distribution(m) for m in startup_imports(repo_root, smk.parent / script[1])}
        checked[rule] = needed
        for env in envs[rule]:
            missing = needed - set(env_pins(env))
            assert not missing, f"rule {rule}: {env.name} lacks {sorted(missing)}"
    assert {"numpy", "pandas"} <= checked["predict_method"]
    assert "matplotlib" in checked["plot_metric"]
    for env in (repo_root / "envs").glob("*.yaml"):  # medsegflow.io imports it lazily
        assert "simpleitk" in env_pins(env), f"{env.name} lacks simpleitk"


def test_the_envs_together_provide_every_import_of_the_library(repo_root):
    provided = set().union(*(env_pins(p) for p in (repo_root / "envs").glob("*.yaml")))
    files = [*(repo_root / "medsegflow").rglob("*.py"), *(repo_root / "scripts").glob("*.py")]
    needed = {
        distribution(_third_party(name))
        for path in files
        for name in module_imports(path, top_level_only=False)
        if _third_party(name)
    }
    assert {"torch", "segment-anything", "nnunetv2", "matplotlib"} <= needed
    assert not needed - provided, f"no env provides {sorted(needed - provided)}"
    torch_env = env_pins(repo_root / "envs/torch.yaml")
    assert {"torch", "torchvision", "segment-anything", "open-clip-torch"} <= set(torch_env)
    assert {"torch", "nnunetv2"} <= set(env_pins(repo_root / "envs/nnunet.yaml"))


def test_jobs_import_medsegflow_from_the_workflow_folder(repo_root, tmp_path):
    """A job's interpreter needs no medsegflow install (conda envs have none): Snakemake
    puts the Snakefile's folder on the sys.path of every Python script it runs."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True
    )
    python = tmp_path / "venv" / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=True,
    ).stdout.strip()
    # the dependencies, but not the .pth hooks that make medsegflow importable
    (Path(purelib) / "deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8"
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    bare = subprocess.run([python, "-c", "import medsegflow"], cwd=workdir, capture_output=True)
    assert bare.returncode != 0, "medsegflow importable without the workflow folder"
    config = {
        "datasets": {"us": {"adapter": "phantom", "params": {"kind": "us", "n_cases": 4}}},
        "prompts": {"box": {"source": "gt", "type": "box"}},
        "methods": {"otsu": {"family": "classical", "algorithm": "otsu", "prompts": "box"}},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    cmd = [python, "-m", "snakemake", "-s", str(repo_root / "Snakefile")]
    cmd += ["results/data/us/cases.tsv", "--cores", "1", "--configfile", "config.yaml"]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, encoding="utf-8")
    assert result.returncode == 0, result.stderr[-3000:]
    cases = (workdir / "results/data/us/cases.tsv").read_text(encoding="utf-8").splitlines()
    assert len(cases) == 1 + 4
