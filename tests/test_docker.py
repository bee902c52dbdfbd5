"""The production stack (``docker/``) validates and agrees with the project's own configuration.

No container engine runs here: ``docker compose config`` (or the standalone ``docker-compose``)
validates and normalises the file without one, and every check below reads that normalised
output, so anchors and merges are resolved exactly as Compose resolves them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from connectors.exchanges import HANDLERS
from connectors.exchanges.live import endpoint_for
from dataflows import config as cfgmod
from dataflows import ingest
from marketdata.stack import TOPICS

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
FLOW_CONFIGS = {"orderbook": cfgmod.BookConfig, "candles": cfgmod.CandleConfig,
                "ticker": cfgmod.TickerConfig}
FLOW_INPUT = {"orderbook": "book", "candles": "trades", "ticker": "trades"}
LONG_RUNNING = ("kafka", "redis", "ingest", "orderbook", "candles", "ticker", "api", "prometheus")


def compose_cli() -> list[str]:
    """``docker compose`` (the v2 plugin) if present, else the standalone ``docker-compose``."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed "
                "(apt-get install docker-compose)")


@cache
def normalised() -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MD_", "IMAGE_TAG"))}
    out = subprocess.run([*compose_cli(), "-f", str(DOCKER / "compose.yaml"), "config"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, f"compose config failed:\n{out.stderr}"
    return yaml.safe_load(out.stdout)


def services() -> dict[str, Any]:
    return normalised()["services"]


def env_of(name: str) -> dict[str, str]:
    env = services()[name].get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def published(name: str) -> dict[int, int]:
    """container port -> host port for a service (short and long port syntax)."""
    out: dict[int, int] = {}
    for p in services()[name].get("ports", []):
        if isinstance(p, dict):
            out[int(p["target"])] = int(p["published"])
        else:
            host, _, container = str(p).rpartition(":")
            out[int(container.split("/")[0])] = int(host.rpartition(":")[2])
    return out


def volumes_of(name: str) -> list[dict[str, str]]:
    """Mounts as ``{type, source, target}`` (v2 prints the long syntax, v1 the short one)."""
    out = []
    for v in services()[name].get("volumes", []):
        if isinstance(v, dict):
            out.append({"type": v["type"], "source": str(v["source"]), "target": v["target"]})
            continue
        source, target = str(v).split(":")[:2]
        kind = "bind" if source.startswith(("/", ".")) else "volume"
        out.append({"type": kind, "source": source, "target": target})
    return out


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def config_variables() -> set[str]:
    classes = [*vars(cfgmod).values(), ingest.IngestConfig]
    return {f"MD_{f.name.upper()}" for cls in classes
            if dataclasses.is_dataclass(cls) for f in dataclasses.fields(cls)}


@cache
def project_source() -> str:
    """Everything the project runs (not tests, not the compose file itself)."""
    files = [p for p in ROOT.rglob("*") if p.suffix in (".py", ".sh") and p.is_file()
             and not {".venv", "tests", ".git"} & set(p.relative_to(ROOT).parts)]
    return "\n".join(p.read_text(errors="replace") for p in files)


# -- validation ------------------------------------------------------------------------------------
def test_compose_config_validates_with_the_expected_services() -> None:
    svc = services()
    for name in (*LONG_RUNNING, "kafka-init"):
        assert name in svc, f"service {name} missing"
    for name in LONG_RUNNING:
        assert svc[name].get("restart") in ("always", "unless-stopped"), name


def test_kafka_runs_in_kraft_mode() -> None:
    env = env_of("kafka")
    assert "zookeeper" not in services()
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@kafka:")
    assert env["CLUSTER_ID"] and not any(k.startswith("KAFKA_ZOOKEEPER") for k in env)
    assert any(v["target"] == env["KAFKA_LOG_DIRS"] for v in volumes_of("kafka"))


def test_redis_persists() -> None:
    redis_svc = services()["redis"]
    cmd = redis_svc["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert "--save" in cmd and cmd[cmd.index("--save") + 1] != ""
    assert any(v["target"] == "/data" and v["type"] == "volume" for v in volumes_of("redis"))


# -- configuration agrees with dataflows/config.py -------------------------------------------------
def test_md_variables_are_config_fields_or_read_by_the_project() -> None:
    known = config_variables()
    assert "MD_KAFKA_BOOTSTRAP" in known  # the scan of dataflows/config.py works
    for name in services():
        for var in env_of(name):
            if var.startswith("MD_") and var not in known:
                assert re.search(rf"[\"']{var}[\"']", project_source()), (
                    f"{name}: {var} is neither a dataflows/config.py field nor read anywhere")


@pytest.mark.parametrize("flow", sorted(FLOW_CONFIGS))
def test_flow_config_parses_and_points_at_the_stack(flow: str) -> None:
    env = env_of(flow)
    cfg = cfgmod.from_env(FLOW_CONFIGS[flow], env)  # raises SystemExit on a malformed value
    host, port = host_port(cfg.kafka_bootstrap)
    kafka = env_of("kafka")
    advertised = {u.split("://", 1)[1] for u in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    assert f"{host}:{port}" in advertised, "flows must use an advertised listener"
    assert host == "kafka"
    redis_url = urlparse(cfg.redis_url)
    assert redis_url.hostname == "redis" and (redis_url.port or 6379) == 6379
    assert cfg.metrics_port > 0
    assert cfg.topic(FLOW_INPUT[flow]) in created_topics()


def test_host_ports_match_the_project_defaults() -> None:
    defaults = cfgmod.CommonConfig()
    _, kafka_port = host_port(defaults.kafka_bootstrap)
    assert published("kafka")[kafka_port] == kafka_port
    external = [u for u in env_of("kafka")["KAFKA_ADVERTISED_LISTENERS"].split(",")
                if u.endswith(f":{kafka_port}")]
    assert external and ("localhost" in external[0] or "127.0.0.1" in external[0])
    redis_port = urlparse(defaults.redis_url).port or 6379
    assert published("redis")[6379] == redis_port
    api = env_of("api")
    assert published("api")[int(api["MD_API_PORT"])] == int(api["MD_API_PORT"])


def created_topics() -> set[str]:
    env = env_of("kafka-init")
    return {f"{env['MD_TOPIC_PREFIX']}{t}" for t in env["TOPICS"].split()}


def test_topics_created_are_the_projects() -> None:
    env = env_of("kafka-init")
    assert set(env["TOPICS"].split()) == set(TOPICS)
    prefixes = {env_of(s)["MD_TOPIC_PREFIX"] for s in ("ingest", *FLOW_CONFIGS, "kafka-init")}
    assert prefixes == {cfgmod.CommonConfig().topic_prefix}
    assert int(env["PARTITIONS"]) >= 2
    script = "\n".join(services()["kafka-init"]["command"])
    assert "--if-not-exists" in script and "$TOPICS" in script.replace("$$", "$")


def test_ingest_config_parses_and_names_known_exchanges() -> None:
    env = env_of("ingest")
    cfg = cfgmod.from_env(ingest.IngestConfig, env)
    conns = ingest.connections(cfg)
    assert conns and {ex for ex, _ in conns.values()} <= set(HANDLERS)
    for ex, _ in conns.values():
        assert endpoint_for(ex, cfg.simulator).ws.startswith(("ws://", "wss://"))
    assert host_port(cfg.kafka_bootstrap) == host_port(env_of("orderbook")["MD_KAFKA_BOOTSTRAP"])


# -- flows: recovery, commands, metrics ------------------------------------------------------------
@pytest.mark.parametrize("flow", ["ingest", *sorted(FLOW_CONFIGS)])
def test_flow_services_run_their_dataflow(flow: str) -> None:
    svc = services()[flow]
    assert svc["entrypoint"] == ["run-flow"]
    assert svc["command"][0] == flow
    assert (ROOT / "dataflows" / f"{flow}.py").is_file(), f"dataflows/{flow}.py missing"
    assert svc.get("stop_signal") == "SIGINT"


@pytest.mark.parametrize("flow", sorted(FLOW_CONFIGS))
def test_each_flow_has_its_own_recovery_volume(flow: str) -> None:
    svc = services()[flow]
    target = f"{env_of(flow)['MD_RECOVERY_DIR']}/{flow}"
    mounts = [v for v in volumes_of(flow) if v["target"] == target]
    assert len(mounts) == 1 and mounts[0]["type"] == "volume"
    assert mounts[0]["source"] in normalised()["volumes"]
    others = {v["source"] for f in FLOW_CONFIGS if f != flow for v in volumes_of(f)
              if v["target"].startswith(env_of(f)["MD_RECOVERY_DIR"])}
    assert mounts[0]["source"] not in others
    cmd = svc["command"]
    assert int(cmd[cmd.index("-s") + 1]) > 0 and int(cmd[cmd.index("-b") + 1]) >= 0


def test_prometheus_scrapes_every_process() -> None:
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    for flow in ("ingest", *FLOW_CONFIGS):
        env = env_of(flow)
        assert f"{flow}:{env['MD_METRICS_PORT']}" in targets
        if env.get("BYTEWAX_DATAFLOW_API_ENABLED") == "true":
            assert f"{flow}:{env.get('BYTEWAX_DATAFLOW_API_PORT', '3030')}" in targets
    assert f"api:{env_of('api')['MD_API_PORT']}" in targets
    hosts = {t.rpartition(":")[0] for t in targets} - {"localhost"}
    assert hosts <= set(services()), f"targets that are no service: {hosts - set(services())}"
    mounted = [v for v in volumes_of("prometheus")
               if v["target"] == "/etc/prometheus/prometheus.yml"]
    assert mounted and Path(mounted[0]["source"]) == DOCKER / "prometheus.yml"


# -- the image -------------------------------------------------------------------------------------
def test_dockerfile_is_multistage_pinned_non_root_and_installs_every_package() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    froms = [args.get(m.strip("${}"), m) for m in re.findall(r"^FROM (\S+)", text, re.M)]
    assert len(froms) >= 2, "multi-stage"
    for image in froms:
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"unpinned {image}"
    final = text[text.rindex("\nFROM "):]
    users = re.findall(r"^USER (\S+)", final, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "COPY --from=" in final
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pkg in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        name = pkg.rstrip("*")
        assert re.search(rf"^COPY {name} \./{name}$", text, re.M), f"package {name} not copied"
    assert "docker/run-flow.sh" in text and (ROOT / "docker" / "run-flow.sh").is_file()
    build = text[:text.rindex("\nFROM ")]
    assert "gcc" in build and "operators._native" in build, "the compiled scanners are built"
    assert "gcc" not in final, "no compiler in the runtime image"


def test_run_flow_inits_recovery_once_tees_logs_and_execs_bytewax(tmp_path: Path) -> None:
    """The entrypoint, run for real with a stand-in ``python`` that records its arguments and
    passes ``-m bytewax.recovery`` on to the real interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "python"
    fake.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {calls}
if [[ "$2" == bytewax.recovery ]]; then exec {sys.executable} "$@"; fi
echo "bytewax would run now"
""")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "MD_RECOVERY_DIR": str(tmp_path / "rec"),
           "MD_LOG_DIR": str(tmp_path / "logs"), "RECOVERY_PARTITIONS": "3"}
    for _ in range(2):  # the second start must reuse the stores, not re-create them
        out = subprocess.run(["bash", str(DOCKER / "run-flow.sh"), "orderbook", "-s", "10",
                              "-b", "60"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    parts = sorted(p.name for p in (tmp_path / "rec" / "orderbook").iterdir())
    assert parts == ["part-0.sqlite3", "part-1.sqlite3", "part-2.sqlite3"]
    lines = calls.read_text().splitlines()
    run = f"-m bytewax.run dataflows.orderbook:flow -r {tmp_path / 'rec' / 'orderbook'} -s 10 -b 60"
    assert lines == [f"-m bytewax.recovery {tmp_path / 'rec' / 'orderbook'} 3", run, run]
    log = wait_for_text(tmp_path / "logs" / "orderbook.log", "bytewax would run now", count=2)
    assert log.count("bytewax would run now") == 2
    no_rec = subprocess.run(["bash", str(DOCKER / "run-flow.sh"), "ingest"],
                            env={**env, "MD_RECOVERY_DIR": ""}, capture_output=True, text=True,
                            timeout=60)
    assert no_rec.returncode == 0
    assert calls.read_text().splitlines()[-1] == "-m bytewax.run dataflows.ingest:flow"


def wait_for_text(path: Path, text: str, count: int) -> str:
    """``tee`` writes asynchronously after the script exits: wait for it with a deadline."""
    from tests.util import wait_until

    return wait_until(lambda: path.exists() and path.read_text().count(text) >= count and
                      path.read_text(), timeout=10, message=f"{count}x {text!r} in {path}")
