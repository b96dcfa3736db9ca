"""infra/: the deployment files parse, agree with each other and with the code they start.

Nothing here builds an image or talks to a cluster. The checks are the ones a typo would break without
any test noticing: one image name and the Dockerfile's targets everywhere, non-root final stages, the
entry-point modules, and every option of every curate command (Kubernetes Jobs, README commands, the
Dataflow template's parameters) known to the job's parser or to Beam's ``PipelineOptions`` (which only
warns about options it does not know, so a misspelt one would silently do nothing).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import re
import shlex
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
DOCKERIGNORE = INFRA / "docker" / "Dockerfile.dockerignore"
README = INFRA / "README.md"
METADATA = INFRA / "dataflow" / "flex-template-metadata.json"
DAGSTER_VALUES = INFRA / "k8s" / "dagster-values.yaml"
DASK_CLUSTER = INFRA / "k8s" / "dask-cluster.yaml"
DASK_JOB = INFRA / "k8s" / "curate-dask-job.yaml"
FLINK_DEPLOYMENT = INFRA / "flink" / "flinkdeployment.yaml"
FLINK_JOB = INFRA / "flink" / "curate-flink-job.yaml"

IMAGE_NAME = "fleet-curator"
#: Images of other projects that the manifests may name.
THIRD_PARTY_IMAGES = ("flink:",)
CURATE_MODULE = "pipelines.curate"
#: Options of the curate job that shadow a Beam option of the same name (README, "Options").
SHADOWED_BEAM_OPTIONS = {"--labels", "--label"}

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


# --------------------------------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------------------------------
def yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def infra_yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def containers(doc: Any) -> Iterator[dict]:
    """Every Kubernetes container spec in a document (anything under a ``containers`` list)."""
    for node in walk(doc):
        if isinstance(node, dict) and isinstance(node.get("containers"), list):
            yield from (c for c in node["containers"] if isinstance(c, dict))


class Stage:
    def __init__(self, name: str, base: str):
        self.name, self.base = name, base
        self.instructions: list[tuple[str, str]] = []

    def last(self, cmd: str) -> str | None:
        found = [arg for c, arg in self.instructions if c == cmd]
        return found[-1] if found else None


@lru_cache(maxsize=1)
def dockerfile_stages() -> dict[str, Stage]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cmd, _, arg = line.partition(" ")
        cmd, arg = cmd.upper(), arg.strip()
        if cmd == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", arg, flags=re.IGNORECASE)
            assert m, f"FROM line not understood: {line}"
            current = Stage(m.group(2) or f"stage{len(stages)}", m.group(1))
            stages[current.name] = current
        elif current is not None:
            current.instructions.append((cmd, arg))
    return stages


def chain(target: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    stages, out = dockerfile_stages(), []
    name: str | None = target
    while name in stages:
        out.append(stages[name])
        name = stages[name].base
    return out


def exec_form(arg: str) -> list[str]:
    value = json.loads(arg)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {arg}"
    return value


def entrypoint_and_cmd(target: str) -> tuple[list[str], list[str]]:
    """A target's ENTRYPOINT and CMD, inherited through its FROM stages; an ENTRYPOINT set in a stage
    resets the CMD it inherits (Docker's rule)."""
    entry: list[str] | None = None
    cmd: list[str] | None = None
    for stage in chain(target):
        e, c = stage.last("ENTRYPOINT"), stage.last("CMD")
        if cmd is None and c is not None:
            cmd = exec_form(c)
        if entry is None and e is not None:
            entry = exec_form(e)
            if cmd is None:
                cmd = []  # the CMD it would inherit
        if entry is not None and cmd is not None:
            break
    return entry or [], cmd or []


def effective_user(target: str) -> str:
    for stage in chain(target):
        user = stage.last("USER")
        if user is not None:
            return user
    return "root"


def final_targets() -> list[str]:
    """The targets one runs: every stage built on python:* (the builder and stages only copied from
    are not)."""
    stages = dockerfile_stages()
    copied_from = {m.group(1) for s in stages.values() for c, a in s.instructions if c == "COPY"
                   for m in [re.search(r"--from=(\S+)", a)] if m}
    return [n for n in stages if n not in copied_from and chain(n)[-1].base.startswith("python:")]


IMAGE_REF = re.compile(r"(?P<repo>[\w.${}/:-]*?" + re.escape(IMAGE_NAME) + r"):(?P<tag>[A-Za-z0-9_.-]+)")


def image_target(ref: str) -> str:
    """The Dockerfile target an image reference names (``[REGISTRY/]fleet-curator:<version>-<target>``)."""
    m = IMAGE_REF.fullmatch(ref)
    assert m, f"{ref!r}: not {IMAGE_NAME}:<version>-<target>"
    assert m.group("repo").rsplit("/", 1)[-1] == IMAGE_NAME, ref
    version, _, target = m.group("tag").partition("-")
    assert version == VERSION, f"{ref}: tag version {version!r} is not pyproject's {VERSION!r}"
    assert target in final_targets(), f"{ref}: {target!r} is not a final target of {DOCKERFILE.name}"
    return target


def container_argv(container: dict) -> list[str]:
    """What a container runs, with Kubernetes' rules: command replaces the image's ENTRYPOINT, args its CMD."""
    image = container["image"]
    entry, cmd = entrypoint_and_cmd(image_target(image)) if IMAGE_NAME in image else ([], [])
    command = container.get("command")
    args = container.get("args")
    if command is not None:
        return [*command, *(args or [])]
    return [*entry, *(cmd if args is None else args)]


def curate_options(argv: list[str]) -> list[str] | None:
    """The options after ``pipelines.curate`` in an argv, or None when it does not run the curate job."""
    if CURATE_MODULE not in argv:
        return None
    return argv[argv.index(CURATE_MODULE) + 1:]


def readme_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def readme_commands() -> list[list[str]]:
    out = []
    for block in readme_blocks("sh"):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append(shlex.split(line))
    return out


def readme_curate_runs() -> list[list[str]]:
    """Curate options of the README's commands: after ``pipelines.curate``, or after an image of a
    target whose entry point is the curate job (``docker run ... IMAGE OPTIONS``)."""
    runs = []
    for tokens in readme_commands():
        opts = curate_options(tokens)
        if opts is None:
            for i, tok in enumerate(tokens):
                if IMAGE_REF.fullmatch(tok) and tokens[0] == "docker" and "run" in tokens[:2]:
                    entry, _ = entrypoint_and_cmd(image_target(tok))
                    if curate_options(entry) == []:
                        opts = tokens[i + 1:]
                    break
        if opts is not None:
            ends = [i for i, t in enumerate(opts) if t in ("&&", "||", "|", ";", "&")]
            runs.append(opts[:ends[0]] if ends else opts)
    return runs


# --------------------------------------------------------------------------------------------------
# The two parsers: the curate job's, then Beam's
# --------------------------------------------------------------------------------------------------
def curate_parser() -> argparse.ArgumentParser:
    from pipelines.curate import build_parser

    parser = build_parser()
    parser.allow_abbrev = False  # an abbreviation would hide a misspelling; commands spell options out
    return parser


def build_parser_as_run() -> argparse.ArgumentParser:
    from pipelines.curate import build_parser

    return build_parser()


@lru_cache(maxsize=1)
def beam_parser() -> argparse.ArgumentParser:
    """Beam's own parser of pipeline options, with every options class the job may use registered
    (the Dask runner's options live in its module), taken from ``get_all_options``' hook."""
    import apache_beam.runners.dask.dask_runner  # noqa: F401  (registers DaskOptions)
    from apache_beam.options.pipeline_options import PipelineOptions

    captured: list[argparse.ArgumentParser] = []
    PipelineOptions([]).get_all_options(add_extra_args_fn=captured.append)
    assert captured, "PipelineOptions.get_all_options no longer calls add_extra_args_fn"
    return captured[0]


class BadOptions(AssertionError):
    pass


def check_curate_argv(argv: list[str], where: str) -> argparse.Namespace:
    """Parse a curate command's options as ``pipelines.curate.main`` does; every option must be known
    to the job's parser or to Beam's, and take the values it is given."""
    argv = [str(a) for a in argv]
    try:
        args, rest = curate_parser().parse_known_args(argv)
    except SystemExit as exc:
        raise BadOptions(f"{where}: the curate parser rejects {argv}") from exc
    try:
        _, unknown = beam_parser().parse_known_args(rest)
    except SystemExit as exc:
        raise BadOptions(f"{where}: Beam rejects {rest}") from exc
    if unknown:
        raise BadOptions(f"{where}: options neither the curate job nor Beam knows: {unknown}")
    return args


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def value_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The curate parser's options that take a value, by dest (what a ``--name=value`` can set)."""
    return {a.dest: a for a in parser._actions if a.option_strings and a.nargs != 0 and a.dest != "help"}


def action_for(parser: argparse.ArgumentParser, option: str) -> argparse.Action | None:
    return next((a for a in parser._actions if option in a.option_strings), None)


# --------------------------------------------------------------------------------------------------
# Files parse
# --------------------------------------------------------------------------------------------------
def test_every_yaml_and_json_file_parses():
    files = infra_yaml_files()
    assert {p.name for p in files} >= {DAGSTER_VALUES.name, DASK_CLUSTER.name, FLINK_DEPLOYMENT.name}
    for path in files:
        assert yaml_docs(path), f"{path}: no document"
    for path in INFRA.rglob("*.json"):
        json.loads(path.read_text())


def test_readme_names_only_files_that_exist():
    named = set(re.findall(r"infra/[\w./-]+[\w]", README.read_text()))
    assert named, "infra/README.md names none of its files"
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing, missing
    listed = {p.relative_to(ROOT).as_posix() for p in INFRA.rglob("*") if p.is_file() and p.name != "README.md"}
    assert not listed - named, f"files in infra/ that infra/README.md does not mention: {sorted(listed - named)}"


# --------------------------------------------------------------------------------------------------
# The image
# --------------------------------------------------------------------------------------------------
def test_dockerfile_targets_and_documented_targets_exist():
    stages = dockerfile_stages()
    assert {"builder", "runtime", "worker", "dataflow", "dagster"} <= set(stages)
    assert set(final_targets()) == {"runtime", "worker", "dataflow", "dagster"}
    documented = set(re.findall(r"--target[ =](\S+)", README.read_text() + DOCKERFILE.read_text()))
    assert documented, "no docker build --target in the README"
    assert documented <= set(final_targets()), documented - set(final_targets())
    assert set(final_targets()) <= documented, "a target the README does not show how to build"


def test_final_stages_run_as_a_non_root_user_without_build_tools():
    stages = dockerfile_stages()
    for target in final_targets():
        user = effective_user(target).split(":")[0]
        assert user not in ("root", "0", ""), f"{target} runs as {user}"
        assert user in ("fleet", "10001"), f"{target}: user {user}"
        assert chain(target)[-1].name != "builder", f"{target} is built on the builder stage"
        for stage in chain(target):
            for c, arg in stage.instructions:
                if c == "RUN":
                    assert not re.search(r"build-essential|\bgcc\b|\bg\+\+|\bmake\b", arg), f"{stage.name}: {arg}"
    assert any(c == "RUN" and "useradd" in a and "10001" in a and "fleet" in a for c, a in stages["runtime"].instructions)
    assert stages["runtime"].last("WORKDIR")


def test_builder_installs_the_project_and_the_source_tree_it_reads_at_run_time():
    builder = dockerfile_stages()["builder"]
    runs = " ".join(a for c, a in builder.instructions if c == "RUN")
    assert re.search(r"pip install (-e )?\.", runs), "the builder does not pip install the project"
    copied = {a.split()[0].rstrip("/") for c, a in builder.instructions if c == "COPY" and "--from" not in a}
    # The packages, and the folders the code finds next to its modules (trigger library, dataset specs).
    packages = set(PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"])
    needed = {p.rstrip("*") for p in packages} | {"triggers", "datasets"}
    assert needed <= copied, f"not copied into the image: {needed - copied}"
    # The build context keeps what the Dockerfile copies.
    ignore = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "*", "Dockerfile.dockerignore is an allowlist"
    kept = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    sources = {a.split()[0].rstrip("/") for s in dockerfile_stages().values() for c, a in s.instructions
               if c == "COPY" and "--from" not in a and not a.startswith("pyproject")}
    sources |= {"pyproject.toml", "README.md"}
    assert sources <= kept, f"copied but left out of the build context: {sources - kept}"


def test_versions_in_the_image_match_the_project():
    text = DOCKERFILE.read_text()
    beam = importlib.metadata.version("apache-beam")
    py = re.search(r'requires-python = ">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    pins = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("apache-beam")]
    assert pins and beam.startswith(pins[0].split("==")[1].rstrip("*").rstrip(".")), (pins, beam)
    sdk = re.findall(r"apache/beam_python(\d+\.\d+)_sdk:(\S+)", text)
    assert sdk == [(py, beam)], f"the SDK harness image must be Beam {beam} for Python {py}: {sdk}"
    assert f"apache-beam[gcp,dask]=={beam}" in text
    bases = {s.base for s in dockerfile_stages().values() if s.base.startswith("python:")}
    assert bases == {f"python:{py}-slim"}, bases
    assert f"python{py.replace('.', '')}-template-launcher-base" in text
    dagster_minor = int(importlib.metadata.version("dagster").split(".")[1])
    for lib in ("dagster-k8s", "dagster-postgres"):  # dagster 1.N goes with its libraries 0.(N+16)
        assert f"{lib}==0.{dagster_minor + 16}.*" in text, lib


def test_entry_points_exist():
    for module in (CURATE_MODULE, "dagster_project.definitions", PYPROJECT["tool"]["dagster"]["module_name"]):
        assert importlib.util.find_spec(module) is not None, module
    entry, cmd = entrypoint_and_cmd("runtime")
    assert entry == ["python", "-m", CURATE_MODULE], entry
    entry, cmd = entrypoint_and_cmd("worker")
    assert entry == ["/opt/apache/beam/boot"] and cmd == [], (entry, cmd)
    assert entrypoint_and_cmd("dataflow")[0] == ["/opt/apache/beam/boot"]
    worker = dockerfile_stages()["worker"]
    assert any(c == "COPY" and "/opt/apache/beam /opt/apache/beam" in a for c, a in worker.instructions)
    assert any(c == "ENV" and "RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1" in a for c, a in worker.instructions)
    # The Dagster chart and the K8sRunLauncher pass whole commands as args: no ENTRYPOINT.
    entry, cmd = entrypoint_and_cmd("dagster")
    assert entry == [], entry
    assert cmd[:3] == ["dagster", "api", "grpc"]
    assert cmd[cmd.index("-m") + 1] == PYPROJECT["tool"]["dagster"]["module_name"]
    assert cmd[cmd.index("-h") + 1] == "0.0.0.0"
    port = cmd[cmd.index("-p") + 1]
    assert dockerfile_stages()["dagster"].last("EXPOSE") == port == "4000"
    # The Flex Template launcher runs a file that the image holds and that starts the curate job.
    dataflow = dockerfile_stages()["dataflow"]
    env = " ".join(a for c, a in dataflow.instructions if c == "ENV")
    py_file = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)", env).group(1)
    copies = {a.split()[-1]: a.split()[0] for c, a in dataflow.instructions if c == "COPY" and "--from" not in a}
    assert py_file in copies, f"{py_file} is not copied into the dataflow target"
    source = (ROOT / copies[py_file]).read_text()
    assert f"from {CURATE_MODULE} import main" in source and "raise SystemExit(main())" in source


# --------------------------------------------------------------------------------------------------
# One image name, the Dockerfile's targets
# --------------------------------------------------------------------------------------------------
def all_images() -> list[tuple[Path, str]]:
    out = []
    for path in infra_yaml_files():
        for doc in yaml_docs(path):
            for node in walk(doc):
                if isinstance(node, dict) and "image" in node:
                    img = node["image"]
                    if isinstance(img, dict):  # Helm style: repository + tag
                        if "repository" in img:
                            out.append((path, f"{img['repository']}:{img.get('tag', '')}"))
                    elif isinstance(img, str):
                        out.append((path, img))
    return out


def test_one_image_name_everywhere():
    images = all_images()
    assert images
    for path, ref in images:
        if ref.startswith(THIRD_PARTY_IMAGES):
            continue
        image_target(ref)  # fleet-curator:<pyproject version>-<final target>
    readme_refs = [m.group(0) for m in IMAGE_REF.finditer(README.read_text() + DOCKERFILE.read_text())]
    assert readme_refs
    for ref in readme_refs:
        image_target(ref.split("/")[-1] if ref.startswith("$") else ref)


def test_containers_run_the_right_targets():
    def targets(path: Path) -> dict[str, str]:
        return {c["name"]: image_target(c["image"]) for d in yaml_docs(path) for c in containers(d) if "image" in c}

    assert targets(DASK_CLUSTER) == {"worker": "runtime", "scheduler": "runtime"}
    assert targets(DASK_JOB) == {"curate": "runtime"}
    assert targets(FLINK_JOB) == {"curate": "runtime"}
    assert targets(FLINK_DEPLOYMENT) == {"beam-worker-pool": "worker"}
    deployment = yaml_docs(DAGSTER_VALUES)[0]["dagster-user-deployments"]["deployments"][0]
    assert image_target(f"{deployment['image']['repository']}:{deployment['image']['tag']}") == "dagster"


def test_pods_share_one_volume_claim():
    claims = {node["claimName"] for p in infra_yaml_files() for d in yaml_docs(p) for node in walk(d)
              if isinstance(node, dict) and "claimName" in node}
    pvcs = {d["metadata"]["name"] for p in infra_yaml_files() for d in yaml_docs(p)
            if isinstance(d, dict) and d.get("kind") == "PersistentVolumeClaim"}
    assert claims == pvcs and len(pvcs) == 1, (claims, pvcs)


# --------------------------------------------------------------------------------------------------
# Every curate option is known
# --------------------------------------------------------------------------------------------------
def manifest_curate_runs() -> list[tuple[str, list[str]]]:
    runs = []
    for path in infra_yaml_files():
        for doc in yaml_docs(path):
            for c in containers(doc):
                if "image" in c and not c["image"].startswith(THIRD_PARTY_IMAGES):
                    opts = curate_options(container_argv(c))
                    if opts is not None:
                        runs.append((f"{path.relative_to(ROOT)}:{c['name']}", opts))
    return runs


def test_every_curate_command_uses_known_options():
    runs = manifest_curate_runs() + [(f"infra/README.md #{i}", o) for i, o in enumerate(readme_curate_runs())]
    where = {w.split(":")[0].split(" #")[0] for w, _ in runs}
    assert {"infra/k8s/curate-dask-job.yaml", "infra/flink/curate-flink-job.yaml", "infra/README.md"} <= where, where
    assert len(runs) >= 8, [w for w, _ in runs]
    for w, opts in runs:
        check_curate_argv(opts, w)


def test_beam_run_config_in_the_readme_uses_known_options():
    configs = [yaml.safe_load(b) for b in readme_blocks("yaml")]
    beams = [c["resources"]["beam"]["config"] for c in configs if isinstance(c, dict) and "resources" in c]
    assert beams
    for beam in beams:
        check_curate_argv(["--input=x", "--output=y", f"--runner={beam['runner']}", *beam["options"]], "README beam resource")


def test_the_checker_rejects_misspelt_and_invalid_options():
    base = ["--input=x", "--output=y"]
    check_curate_argv([*base, "--rate_hz=5", "--runner=FlinkRunner", "--flink_version=1.20"], "good")
    for bad in (["--inptu=x"], ["--rate-hzz=5"], ["--rate=5"], ["--flink_mastr=h:8081"], ["--flink_version=1.17"],
                ["--labels=env=prod"], ["--environment-type=EXTERNAL"], ["stray"]):
        with pytest.raises(BadOptions):
            check_curate_argv([*base, *bad], f"bad {bad}")


def test_curate_options_that_shadow_beam_options_are_documented():
    # A Beam option is lost to the job when the curate parser takes it: the same name, or (argparse
    # accepting abbreviations) a prefix of one of the job's options.
    ours = option_strings(build_parser_as_run()) - {"-h", "--help"}
    shadowed = {b for b in option_strings(beam_parser()) if any(o.startswith(b) for o in ours)}
    assert shadowed == SHADOWED_BEAM_OPTIONS, shadowed
    text = README.read_text()
    for opt in shadowed:
        assert f"Beam's `{opt}`" in text, f"infra/README.md does not explain that {opt} shadows Beam's"


# --------------------------------------------------------------------------------------------------
# Dagster
# --------------------------------------------------------------------------------------------------
#: Top-level keys of the dagster/dagster chart's values (its values.schema.json).
DAGSTER_CHART_KEYS = {
    "global", "nameOverride", "fullnameOverride", "rbacEnabled", "serviceAccount", "imagePullSecrets",
    "dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "computeLogManager",
    "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate", "telemetry",
    "retention", "additionalInstanceConfig", "dagsterHome", "postgresqlSecretName",
}


#: Keys of the chart's sections that the values set (the chart's schema, helm/dagster/schema/).
DAGSTER_SECTION_KEYS = {
    "dagsterWebserver": {
        "dbStatementTimeout", "dbPoolRecycle", "logLevel", "schedulerName", "volumeMounts", "volumes",
        "pathPrefix", "replicaCount", "image", "nameOverride", "service", "workspace", "env", "envConfigMaps",
        "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations",
        "podSecurityContext", "securityContext", "resources", "readinessProbe", "livenessProbe",
        "startupProbe", "annotations", "enableReadOnly",
    },
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "deployment": {
        "name", "image", "port", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "env",
        "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations",
        "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
        "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName", "initContainers",
        "sidecarContainers", "deploymentStrategy", "serviceAccount",
    },
    "k8sRunLauncher": {
        "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps",
        "envSecrets", "envVars", "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources",
        "schedulerName", "securityContext", "runK8sConfig",
    },
    "runK8sConfig": {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata"},
    "postgresql": {
        "postgresqlScheme", "image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
        "postgresqlDatabase", "postgresqlParams", "service",
    },
    "dagsterDaemon": {
        "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps", "envSecrets",
        "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
        "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe", "annotations",
        "runMonitoring", "runRetries", "sensors", "schedules", "schedulerName", "volumeMounts", "volumes",
    },
}


def test_dagster_values_use_the_chart_keys_and_the_k8s_run_launcher():
    values = yaml_docs(DAGSTER_VALUES)[0]
    assert set(values) <= DAGSTER_CHART_KEYS, set(values) - DAGSTER_CHART_KEYS
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    sections = {
        "dagsterWebserver": values["dagsterWebserver"],
        "dagster-user-deployments": values["dagster-user-deployments"],
        "deployment": values["dagster-user-deployments"]["deployments"][0],
        "k8sRunLauncher": k8s,
        "runK8sConfig": k8s.get("runK8sConfig", {}),
        "postgresql": values["postgresql"],
        "dagsterDaemon": values["dagsterDaemon"],
    }
    for name, section in sections.items():
        unknown = set(section) - DAGSTER_SECTION_KEYS[name]
        assert not unknown, f"{name}: keys the chart does not have: {unknown}"
    assert {"dagsterWebserver", "dagster-user-deployments", "runLauncher", "postgresql"} <= set(values)
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert set(launcher["config"]) == {"k8sRunLauncher"}
    assert values["postgresql"]["enabled"] is True
    assert values["dagsterDaemon"]["enabled"] is True
    users = values["dagster-user-deployments"]
    assert users["enabled"] is True and users["enableSubchart"] is True
    (deployment,) = users["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    module = args[args.index("-m") + 1]
    assert module == PYPROJECT["tool"]["dagster"]["module_name"] == "dagster_project.definitions"
    assert importlib.util.find_spec(module) is not None
    _, cmd = entrypoint_and_cmd("dagster")
    assert str(deployment["port"]) == cmd[cmd.index("-p") + 1]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    env = {e["name"] for e in deployment["env"]}
    from dagster_project import resources

    assert env == {resources.ENV_LANDING, resources.ENV_STORE, resources.ENV_DATASETS, resources.ENV_REPORTS}
    # The chart's version is the image's Dagster (same minor as the project's pin).
    dagster_minor = ".".join(importlib.metadata.version("dagster").split(".")[:2])
    installs = [t for t in readme_commands() if t[:3] == ["helm", "upgrade", "--install"] and "dagster/dagster" in t]
    assert installs and all(t[t.index("--version") + 1].startswith(dagster_minor + ".") for t in installs)
    assert all(t[t.index("-f") + 1] == DAGSTER_VALUES.relative_to(ROOT).as_posix() for t in installs)


# --------------------------------------------------------------------------------------------------
# Dask
# --------------------------------------------------------------------------------------------------
def test_dask_cluster_serves_the_scheduler_the_job_connects_to():
    (cluster,) = yaml_docs(DASK_CLUSTER)
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1" and cluster["kind"] == "DaskCluster"
    spec = cluster["spec"]
    service = spec["scheduler"]["service"]
    ports = {p["name"]: p for p in service["ports"]}
    assert ports["tcp-comm"]["port"] == 8786 and ports["http-dashboard"]["port"] == 8787
    (sched,) = spec["scheduler"]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in sched["ports"]}
    assert {p["targetPort"] for p in service["ports"]} <= set(named)
    assert named["tcp-comm"] == 8786
    assert container_argv(sched)[:2] == ["dask", "scheduler"]
    (worker,) = spec["worker"]["spec"]["containers"]
    assert container_argv(worker)[:2] == ["dask", "worker"]
    assert worker["image"] == sched["image"], "scheduler and workers must run the same Dask"
    assert service["selector"]["dask.org/cluster-name"] == cluster["metadata"]["name"]

    # The job and the README's Dagster run config connect to <cluster>-scheduler:8786.
    expected = f"tcp://{cluster['metadata']['name']}-scheduler:{ports['tcp-comm']['port']}"
    addresses = [o.split("=", 1)[1] for w, opts in manifest_curate_runs() for o in opts if o.startswith("--dask_client_address=")]
    addresses += [o.split("=", 1)[1] for b in readme_blocks("yaml") for o in re.findall(r"--dask_client_address=\S+", b)]
    assert len(addresses) >= 2 and set(addresses) == {expected}, addresses
    (job,) = yaml_docs(DASK_JOB)
    assert container_argv(job["spec"]["template"]["spec"]["containers"][0])[:3] == ["python", "-m", CURATE_MODULE]


# --------------------------------------------------------------------------------------------------
# Flink
# --------------------------------------------------------------------------------------------------
def test_flink_deployment_has_the_worker_pool_the_job_uses():
    (dep,) = yaml_docs(FLINK_DEPLOYMENT)
    assert dep["apiVersion"] == "flink.apache.org/v1beta1" and dep["kind"] == "FlinkDeployment"
    spec = dep["spec"]
    (pool,) = [c for c in spec["taskManager"]["podTemplate"]["spec"]["containers"] if c["name"] == "beam-worker-pool"]
    assert container_argv(pool) == ["/opt/apache/beam/boot", "--worker_pool"]
    pool_port = pool["ports"][0]["containerPort"]
    assert pool_port == 50000

    flink_version = spec["flinkVersion"].removeprefix("v").replace("_", ".")
    assert spec["image"].startswith(f"flink:{flink_version}")
    from apache_beam.options.pipeline_options import FlinkRunnerOptions

    assert flink_version in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    rest = f"{dep['metadata']['name']}-rest:{spec.get('flinkConfiguration', {}).get('rest.port', '8081')}"

    (job,) = yaml_docs(FLINK_JOB)
    runs = [o for w, o in manifest_curate_runs() if w.startswith("infra/flink/")]
    runs += [o for o in readme_curate_runs() if "--runner=FlinkRunner" in o]
    assert len(runs) >= 2
    for opts in runs:
        args = dict(o.split("=", 1) if "=" in o else (o, "") for o in opts if o.startswith("--"))
        assert args["--runner"] == "FlinkRunner"
        assert args["--flink_master"] == rest
        assert args["--flink_version"] == flink_version
        assert args["--environment_type"] == "EXTERNAL"
        assert args["--environment_config"] == f"localhost:{pool_port}"
        assert "--flink_submit_uber_jar" in args  # no Java in the runtime image


# --------------------------------------------------------------------------------------------------
# Dataflow Flex Template
# --------------------------------------------------------------------------------------------------
def test_flex_template_parameters_are_the_jobs_value_options():
    meta = json.loads(METADATA.read_text())
    assert meta["name"] and meta["description"]
    params = meta["parameters"]
    parser = curate_parser()
    values = value_actions(parser)
    seen = set()
    for p in params:
        name = p["name"]
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), f"{name}: parameter names are lower_snake_case"
        assert p["label"] and p["helpText"], name
        assert isinstance(p.get("isOptional", False), bool)
        action = action_for(parser, f"--{name}")
        assert action is not None, f"--{name}: the curate parser has no such option"
        assert action.dest in values, f"--{name} takes no value, but the launcher passes --{name}=value"
        assert p.get("isOptional", False) == (not action.required), name
        regexes = [re.compile(r) for r in p.get("regexes", [])]
        if action.default is not None:
            for rx in regexes:
                assert rx.search(str(action.default)), f"{name}: default {action.default!r} fails {rx.pattern}"
        m = re.search(r"Default: (\S+)", p["helpText"])
        if m:
            assert m.group(1) == str(action.default), f"{name}: helpText says {m.group(1)}, the parser {action.default}"
        seen.add(action.dest)
    assert len(seen) == len(params), "two parameters set the same option"
    assert seen == set(values), f"value options without a template parameter: {sorted(set(values) - seen)}"


def test_flex_template_run_in_the_readme_passes_known_parameters():
    meta_names = {p["name"] for p in json.loads(METADATA.read_text())["parameters"]}
    runs = [t for t in readme_commands() if t[:4] == ["gcloud", "dataflow", "flex-template", "run"]]
    assert runs
    for tokens in runs:
        params = [tokens[i + 1] for i, t in enumerate(tokens) if t == "--parameters"]
        params += [t.split("=", 1)[1] for t in tokens if t.startswith("--parameters=")]
        pairs = [kv.split("=", 1) for p in params for kv in p.split(",")]
        assert {"input", "output"} <= {k for k, _ in pairs}
        for k, _ in pairs:
            assert k in meta_names or f"--{k}" in option_strings(beam_parser()), f"parameter {k}: not declared, not a Beam option"
        check_curate_argv([f"--{k}={v}" for k, v in pairs], "README flex-template run")
    builds = [t for t in readme_commands() if t[:4] == ["gcloud", "dataflow", "flex-template", "build"]]
    assert builds and all(t[t.index("--metadata-file") + 1] == METADATA.relative_to(ROOT).as_posix() for t in builds)
    assert all(image_target(t[t.index("--image") + 1].split("/")[-1]) == "dataflow" for t in builds)
