"""Start and stop the local stand-ins for S3 (moto's server mode) and Neptune (Gremlin Server,
and dev/neptune_loader.py for its bulk loader), and Toxiproxy, through which tests inject network
faults (dev/toxiproxy_client.py).

Used by `make services-up` / `make services-down`, by `make demo` and by the integration tests'
session fixture, so there is one way to run the servers.

    python dev/services.py up      # start them, wait until each answers, print shell-ready lines
    python dev/services.py down    # stop them
    python dev/services.py env     # print the shell-ready lines again
    python dev/services.py cluster-up    # a Spark standalone cluster (dev/spark_cluster.py)
    python dev/services.py cluster-down

Ports come from S3_PORT (default 9090), GREMLIN_PORT (default 8182), TOXIPROXY_PORT (default
8474, Toxiproxy's API; its proxies listen on ports their creator chooses) and LOADER_PORT (default
8183, the bulk loader's stand-in; the tests start their own in-process).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GREMLIN_CLASSPATH_DIR = ROOT / "build" / "gremlin-server"
TOXIPROXY_SERVER = ROOT / "build" / "bin" / "toxiproxy-server"
DEFAULT_RUN_DIR = ROOT / "build" / "run"
HOST = "127.0.0.1"
# moto accepts any credentials; these are what the local S3 is told to expect and what we print.
LOCAL_ACCESS_KEY = "imagegraph-local"
LOCAL_SECRET_KEY = "imagegraph-local-secret"
START_TIMEOUT_S = 120.0


class ServiceError(RuntimeError):
    """A local server could not be started or did not answer."""


@dataclass(frozen=True)
class Endpoints:
    """Where the running servers answer; `env()` gives the shell-ready variables."""

    s3_port: int
    gremlin_port: int
    toxiproxy_port: int
    loader_port: int = 0  # 0: no bulk loader stand-in

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    @property
    def gremlin_endpoint(self) -> str:
        return f"ws://{HOST}:{self.gremlin_port}/gremlin"

    @property
    def toxiproxy_url(self) -> str:
        return f"http://{HOST}:{self.toxiproxy_port}"

    @property
    def loader_endpoint(self) -> str:
        return f"http://{HOST}:{self.loader_port}"

    def env(self) -> dict[str, str]:
        return {
            "S3_ENDPOINT": self.s3_endpoint,
            "GREMLIN_ENDPOINT": self.gremlin_endpoint,
            "TOXIPROXY_URL": self.toxiproxy_url,
            **({"NEPTUNE_LOADER_ENDPOINT": self.loader_endpoint} if self.loader_port else {}),
            "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def ports_from_environment() -> Endpoints:
    """Ports from S3_PORT, GREMLIN_PORT, TOXIPROXY_PORT and LOADER_PORT, with defaults 9090,
    8182, 8474, 8183."""
    return Endpoints(_port_from_env("S3_PORT", 9090), _port_from_env("GREMLIN_PORT", 8182),
                     _port_from_env("TOXIPROXY_PORT", 8474), _port_from_env("LOADER_PORT", 8183))


def _port_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ServiceError(f"{name}={raw!r} is not a TCP port number")
    return int(raw)


def free_port() -> int:
    """A TCP port on HOST that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on HOST that nothing listens on right now. Each probe stays
    bound until all are chosen: probes closed one by one may be given the same port twice,
    and two daemons configured with one port make the second exit at start."""
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind((HOST, 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _require_free(port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers do: connections in TIME_WAIT from an earlier run do not hold the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            raise ServiceError(
                f"port {port} for {what} is already in use on {HOST}; "
                f"stop whatever holds it (`make services-down`?) or choose another port"
            ) from None


def _spawn(name: str, argv: list[str], run_dir: Path) -> subprocess.Popen:
    log = open(run_dir / f"{name}.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=run_dir, start_new_session=True)
    (run_dir / f"{name}.pid").write_text(str(proc.pid))
    return proc


def _wait_until(name: str, proc: subprocess.Popen, run_dir: Path, answers) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited with code {proc.returncode}; "
                               f"see {run_dir / (name + '.log')}")
        try:
            answers()
            return
        except Exception as exc:  # not up yet: connection refused, handshake failed, ...
            last_error = exc
            time.sleep(0.5)
    stop_one(name, run_dir)
    raise ServiceError(f"{name} did not answer within {START_TIMEOUT_S:.0f}s "
                       f"(last error: {last_error}); see {run_dir / (name + '.log')}")


def _s3_answers(endpoint: str) -> None:
    with urllib.request.urlopen(endpoint + "/", timeout=2) as response:
        response.read()


def _gremlin_answers(endpoint: str, port: int) -> None:
    from gremlin_python.driver.client import Client

    socket.create_connection((HOST, port), timeout=2).close()  # cheap check before a handshake

    client = Client(endpoint, "g")
    try:
        client.submit("g.inject(1)").all().result(timeout=5)
    finally:
        client.close()


def _gremlin_yaml(run_dir: Path, port: int, persistent: bool) -> Path:
    properties = (ROOT / "conf" / "tinkergraph.properties").read_text()
    if persistent:  # written on a clean shutdown, read back on start
        properties += (f"gremlin.tinkergraph.graphLocation={run_dir / 'graph.json'}\n"
                       "gremlin.tinkergraph.graphFormat=graphson\n")
    (run_dir / "tinkergraph.properties").write_text(properties)
    template = string.Template((ROOT / "conf" / "gremlin-server.yaml").read_text())
    text = template.substitute(HOST=HOST, PORT=port, CONF_DIR=str(ROOT / "conf"),
                               GRAPH_PROPERTIES=str(run_dir / "tinkergraph.properties"))
    path = run_dir / "gremlin-server.yaml"
    path.write_text(text)
    return path


def start_gremlin(port: int, run_dir: Path, persistent: bool = False) -> str:
    """Start Gremlin Server on `port`; return its endpoint once it answers. With `persistent`
    the graph survives a stop and start in the same `run_dir`."""
    if not GREMLIN_CLASSPATH_DIR.is_dir():
        raise ServiceError(f"{GREMLIN_CLASSPATH_DIR} is missing; run `make jars` first")
    run_dir.mkdir(parents=True, exist_ok=True)
    _require_free(port, "Gremlin Server (GREMLIN_PORT)")
    endpoint = f"ws://{HOST}:{port}/gremlin"
    gremlin = _spawn("gremlin", [
        "java", "-Xms256m", "-Xmx2g",
        f"-Dlogback.configurationFile={ROOT / 'conf' / 'gremlin-server-logback.xml'}",
        "-cp", f"{GREMLIN_CLASSPATH_DIR}/*",
        "org.apache.tinkerpop.gremlin.server.GremlinServer",
        str(_gremlin_yaml(run_dir, port, persistent)),
    ], run_dir)
    _wait_until("gremlin", gremlin, run_dir, lambda: _gremlin_answers(endpoint, port))
    return endpoint


def start_s3(port: int, run_dir: Path) -> str:
    """Start moto's S3 server on `port`; return its endpoint once it answers."""
    run_dir.mkdir(parents=True, exist_ok=True)
    _require_free(port, "the S3 server (S3_PORT)")
    endpoint = f"http://{HOST}:{port}"
    s3 = _spawn("s3", [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
                run_dir)
    _wait_until("s3", s3, run_dir, lambda: _s3_answers(endpoint))
    return endpoint


def start_toxiproxy(port: int, run_dir: Path) -> str:
    """Start Toxiproxy with its API on `port`; return the API's URL once it answers."""
    if not TOXIPROXY_SERVER.is_file():
        raise ServiceError(f"{TOXIPROXY_SERVER} is missing; run `make toxiproxy` first")
    run_dir.mkdir(parents=True, exist_ok=True)
    _require_free(port, "Toxiproxy's API (TOXIPROXY_PORT)")
    url = f"http://{HOST}:{port}"
    toxiproxy = _spawn("toxiproxy", [str(TOXIPROXY_SERVER), "-host", HOST, "-port", str(port)],
                       run_dir)
    _wait_until("toxiproxy", toxiproxy, run_dir, lambda: _toxiproxy_answers(url))
    return url


def _toxiproxy_answers(url: str) -> None:
    with urllib.request.urlopen(url + "/version", timeout=2) as response:
        response.read()


def start_loader(endpoints: Endpoints, run_dir: Path) -> str:
    """Start the bulk loader's stand-in (dev/neptune_loader.py) on `endpoints.loader_port`,
    reading the local S3 and loading into the local Gremlin Server; its endpoint once it
    answers."""
    _require_free(endpoints.loader_port, "the bulk loader stand-in (LOADER_PORT)")
    loader = _spawn("loader", [
        sys.executable, str(ROOT / "dev" / "neptune_loader.py"),
        "--port", str(endpoints.loader_port), "--s3-endpoint", endpoints.s3_endpoint,
        "--access-key", LOCAL_ACCESS_KEY, "--secret-key", LOCAL_SECRET_KEY,
        "--gremlin-endpoint", endpoints.gremlin_endpoint,
    ], run_dir)
    _wait_until("loader", loader, run_dir,
                lambda: socket.create_connection((HOST, endpoints.loader_port), timeout=2).close())
    return endpoints.loader_endpoint


def start(endpoints: Endpoints, run_dir: Path = DEFAULT_RUN_DIR) -> Endpoints:
    """Start moto's S3 server, Gremlin Server, Toxiproxy and (with a `loader_port`) the bulk
    loader's stand-in on `endpoints`' ports; return when each answers."""
    _require_free(endpoints.s3_port, "the S3 server (S3_PORT)")
    _require_free(endpoints.gremlin_port, "Gremlin Server (GREMLIN_PORT)")
    _require_free(endpoints.toxiproxy_port, "Toxiproxy's API (TOXIPROXY_PORT)")
    try:
        start_s3(endpoints.s3_port, run_dir)
        start_gremlin(endpoints.gremlin_port, run_dir)
        start_toxiproxy(endpoints.toxiproxy_port, run_dir)
        if endpoints.loader_port:
            start_loader(endpoints, run_dir)
    except ServiceError:
        stop(run_dir)
        raise
    return endpoints


def stop_one(name: str, run_dir: Path = DEFAULT_RUN_DIR) -> None:
    """Stop one server started by `start` (by its pid file); a no-op when it is not running."""
    pid_file = run_dir / f"{name}.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            if _exited(pid):
                break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pid_file.unlink(missing_ok=True)


def _exited(pid: int) -> bool:
    """Whether `pid` has exited; reaps it when this process started it (a child that exited
    stays a zombie, which signal 0 still reaches, until its parent waits for it)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:  # started by another process (`services.py up`)
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop(run_dir: Path = DEFAULT_RUN_DIR) -> None:
    """Stop the servers started by `start` in `run_dir`."""
    for name in ("loader", "toxiproxy", "gremlin", "s3"):
        stop_one(name, run_dir)


def _print_env(endpoints: Endpoints) -> None:
    for key, value in endpoints.env().items():
        print(f"{key}={value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "env", "cluster-up", "cluster-down"],
                        help="up: start and wait; down: stop; env: print the variables; "
                             "cluster-up, cluster-down: the Spark standalone cluster")
    args = parser.parse_args(argv)
    if args.action.startswith("cluster-"):
        import spark_cluster  # it builds on this module

        return spark_cluster.main([args.action.removeprefix("cluster-")])
    try:
        endpoints = ports_from_environment()
        if args.action == "up":
            start(endpoints)
            _print_env(endpoints)
        elif args.action == "down":
            stop()
        else:
            _print_env(endpoints)
    except ServiceError as exc:
        print(f"services: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
