"""docker-compose.yml and docker-compose.npu.yml: accepted by docker-compose, and every file,
port, volume and setting they name exists and agrees with the image and the service settings.
"""

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

MAIN = ("docker-compose.yml",)
NPU = ("docker-compose.yml", "docker-compose.npu.yml")
NPU_ENV = {"RENDER_GID": "4242"}
XRT_PREFIX = "/opt/xilinx/xrt"


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip())
            for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.MULTILINE)]


def final_stage(instructions):
    """The instructions of the last build stage (what the image runs)."""
    starts = [i for i, (name, _) in enumerate(instructions) if name == "FROM"]
    return instructions[starts[-1]:]


def dockerfile_env(instructions) -> dict[str, str]:
    env = {}
    for name, args in instructions:
        if name == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


def port_of_health_probe(command: list[str]) -> int:
    """The port the probe uses with the image's environment: AMANUENSIS_PORT's default."""
    [port] = re.findall(r"environ\.get\('AMANUENSIS_PORT', '(\d+)'\)", " ".join(command))
    assert "http://127.0.0.1:%s/health" in " ".join(command), command
    return int(port)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    candidates = [path] + [str(p) for p in Path(path).parents if str(p) != "."]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        regex = (re.escape(body).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
                 .replace(r"\?", "[^/]"))
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def image(repo_root):
    instructions = dockerfile_instructions(repo_root / "Dockerfile")
    stage = final_stage(instructions)
    [cmd] = [json.loads(args) for name, args in stage if name == "CMD"]
    [health] = [args for name, args in stage if name == "HEALTHCHECK"]
    [volume] = [json.loads(args) for name, args in stage if name == "VOLUME"]
    return {
        "all": instructions,
        "env": dockerfile_env(stage),
        "cmd": cmd,
        "health_cmd": json.loads(health.split(" CMD ", 1)[1]),
        "expose": [int(a) for name, args in stage if name == "EXPOSE" for a in args.split()],
        "volumes": volume,
        "user": [args for name, args in stage if name == "USER"],
    }


@pytest.fixture(scope="module")
def settings_class():
    from app.settings import Settings

    return Settings


@pytest.fixture(scope="module")
def setting_env_names(settings_class) -> set[str]:
    prefix = settings_class.model_config.get("env_prefix", "").upper()
    names = set()
    for name, field in settings_class.model_fields.items():
        names.add(prefix + name.upper())
        if isinstance(field.validation_alias, str):
            names.add(field.validation_alias.upper())
    return names


def container_settings(settings_class, image, service, monkeypatch):
    """The Settings the service builds inside the container: the image's environment under
    the compose file's (env_file included), and nothing from this process's environment."""
    environment = {**image["env"], **service.get("environment", {})}
    for key in [k for k in os.environ if k.startswith("AMANUENSIS_")]:
        monkeypatch.delenv(key)
    for key, value in environment.items():
        if key.startswith("AMANUENSIS_"):
            monkeypatch.setenv(key, str(value))
    return settings_class(_env_file=None)


@pytest.fixture(scope="module")
def main_config(compose_config):
    result, parsed = compose_config(*MAIN)
    assert result.returncode == 0, result.stderr
    return parsed


@pytest.fixture(scope="module")
def npu_config(compose_config):
    result, parsed = compose_config(*NPU, extra_env=NPU_ENV)
    assert result.returncode == 0, result.stderr
    return parsed


@pytest.fixture(scope="module", params=["main", "npu"])
def config(request):
    return request.getfixturevalue(f"{request.param}_config")


def bind_mounts(service: dict) -> dict[str, str]:
    """container path -> host path for bind mounts (sources that are paths)."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith("/"):
            mounts[target] = source
    return mounts


def named_volumes(service: dict) -> dict[str, str]:
    """container path -> volume name for named volumes."""
    return {spec.split(":")[1]: spec.split(":")[0]
            for spec in service.get("volumes", []) if not spec.startswith("/")}


def container_ports(service: dict) -> list[int]:
    return [int(p["target"]) if isinstance(p, dict) else int(str(p).split(":")[-1])
            for p in service.get("ports", [])]


def test_npu_overlay_refuses_to_start_without_render_group(compose_config):
    result, _ = compose_config(*NPU)
    assert result.returncode != 0
    assert "RENDER_GID" in result.stderr


def test_bind_mount_sources_exist(config, repo_root):
    for name, service in config["services"].items():
        for target, source in bind_mounts(service).items():
            if source == str(repo_root / "kernels" / "build"):
                # The kernel build's output: absent until `make -C kernels` has run.
                assert (repo_root / "kernels" / "Makefile").exists()
            elif source.startswith(XRT_PREFIX):
                assert source == target == XRT_PREFIX, (name, source, target)
            else:
                assert Path(source).exists(), (name, source)
                assert Path(source).is_relative_to(repo_root), (name, source)


def test_named_volumes_are_declared(config):
    declared = set(config.get("volumes", {}))
    for service in config["services"].values():
        assert set(named_volumes(service).values()) <= declared


def test_model_cache_volume_holds_every_model_cache(config, image):
    service = config["services"]["amanuensis"]
    [cache] = image["volumes"]
    assert cache in named_volumes(service), "the model cache is not on a named volume"
    for variable in ("HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        assert Path(image["env"][variable]).is_relative_to(cache), variable


def test_service_port_agrees_everywhere(config, image, settings_class, repo_root):
    port = settings_class.model_fields["port"].default
    service = config["services"]["amanuensis"]
    assert container_ports(service) == [port]
    assert image["expose"] == [port]
    assert "AMANUENSIS_PORT" not in image["env"]
    assert settings_class.model_fields["host"].default == "0.0.0.0"
    assert port_of_health_probe(image["health_cmd"]) == port
    assert service["healthcheck"]["test"] == ["CMD", *image["health_cmd"]]
    environment = service.get("environment", {})
    assert int(environment.get("AMANUENSIS_PORT", port)) == port

    scrape = yaml.safe_load((repo_root / "config/prometheus.yml").read_text())
    [job] = [j for j in scrape["scrape_configs"] if j["job_name"] == "amanuensis"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": [f"amanuensis:{port}"]}]


def test_image_runs_the_service_command_as_non_root(image):
    """`amanuensis serve` (host and port from the settings), from the image's venv, which
    holds the project as a regular install (tests/deploy/test_image.py runs it)."""
    assert image["cmd"] == ["amanuensis", "serve"]
    assert image["env"]["PATH"].split(":")[0] == "/opt/venv/bin"
    [user] = image["user"]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0


def test_env_settings_are_real_settings_fields(config, image, setting_env_names):
    environment = config["services"]["amanuensis"].get("environment", {})
    for key in list(environment) + list(image["env"]):
        if key.startswith("AMANUENSIS_"):
            assert key in setting_env_names, f"{key} is not a Settings field"


def test_env_example_documents_only_settings(repo_root, setting_env_names):
    text = (repo_root / "config/amanuensis.env.example").read_text()
    keys = set(re.findall(r"^#?\s*(AMANUENSIS_[A-Z0-9_]+)=", text, re.MULTILINE))
    assert keys, "no AMANUENSIS_ settings in the example env file"
    assert keys <= setting_env_names, keys - setting_env_names


def test_container_environment_is_valid_settings(config, image, settings_class, monkeypatch):
    service = config["services"]["amanuensis"]
    settings = container_settings(settings_class, image, service, monkeypatch)
    assert settings.port == settings_class.model_fields["port"].default


def test_main_file_keeps_off_the_npu(main_config, image, settings_class, monkeypatch):
    service = main_config["services"]["amanuensis"]
    settings = container_settings(settings_class, image, service, monkeypatch)
    assert settings.mel_backend == "cpu"
    assert "devices" not in service


def test_npu_overlay_hands_the_npu_to_the_container(npu_config, image, settings_class,
                                                    repo_root, monkeypatch):
    service = npu_config["services"]["amanuensis"]
    assert "/dev/accel/accel0:/dev/accel/accel0" in service["devices"]
    assert service["group_add"] == [NPU_ENV["RENDER_GID"]]
    assert service["ulimits"]["memlock"] == {"soft": -1, "hard": -1}
    assert service["volumes"].count(f"{XRT_PREFIX}:{XRT_PREFIX}:ro") == 1
    environment = service["environment"]
    assert environment["XILINX_XRT"] == XRT_PREFIX
    assert environment["PYTHONPATH"] == f"{XRT_PREFIX}/python"
    assert environment["LD_LIBRARY_PATH"] == f"{XRT_PREFIX}/lib"
    settings = container_settings(settings_class, image, service, monkeypatch)
    # auto: the NPU when it opens, otherwise the CPU with the reason counted.
    assert settings.mel_backend == "auto"
    assert settings.npu_device_id == 0
    # The installed package has no built kernels: the overlay mounts them and says where.
    assert settings.kernel_dir.is_absolute()
    assert bind_mounts(service)[str(settings.kernel_dir)] == str(repo_root / "kernels" / "build")


def test_prometheus_and_grafana_mounts_match_their_configs(config, repo_root):
    prometheus = config["services"]["prometheus"]
    mounts = bind_mounts(prometheus)
    config_file = next(a.split("=", 1)[1] for a in prometheus["command"]
                       if a.startswith("--config.file="))
    assert mounts[config_file] == str(repo_root / "config/prometheus.yml")
    assert container_ports(prometheus) == [9090]

    grafana = config["services"]["grafana"]
    mounts = bind_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == str(repo_root / "config/grafana/provisioning")
    provisioning = repo_root / "config/grafana/provisioning"
    datasources = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards/amanuensis.yml").read_text())
    dashboards_dir = providers["providers"][0]["options"]["path"]
    assert mounts[dashboards_dir] == str(repo_root / "config/grafana/dashboards")
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (Path(mounts[str(home.parent)]) / home.name).exists()
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert container_ports(grafana) == [3000]


def test_every_service_restarts_unless_stopped(config):
    for name, service in config["services"].items():
        assert service["restart"] == "unless-stopped", name


def test_dockerignore_matcher_follows_docker_rules():
    patterns = ["**", "!app/", "**/__pycache__"]
    assert not dockerignored("app/main.py", patterns)
    assert dockerignored("app/__pycache__/main.pyc", patterns)
    assert dockerignored("tests/test_x.py", patterns)


def test_dockerfile_copies_exist_and_are_not_dockerignored(image, repo_root):
    patterns = [line.strip() for line in (repo_root / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copies = [args.split() for name, args in image["all"]
              if name == "COPY" and not args.startswith("--from")]
    assert copies
    for *sources, _destination in copies:
        for source in sources:
            assert (repo_root / source).exists(), source
            assert not dockerignored(source, patterns), source
    assert dockerignored("kernels/build/mel.xclbin", patterns), "built kernels go in the image"
    assert dockerignored("app/__pycache__/main.cpython-311.pyc", patterns)
