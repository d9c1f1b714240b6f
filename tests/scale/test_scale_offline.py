"""Scale-out pieces that need no cluster: Ray stays out of plain imports and the plain server, the options'
checks, aiforge's lines in the HAProxy config Ray renders, the KubeRay files, and ``aiforge batch --backend
local`` on bad rows of every file type."""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from scale_helpers import read_predictions, read_rejects
from typer.testing import CliRunner

from aiforge.cli import app
from aiforge.errors import AiforgeError
from aiforge.scale.cluster import ingress_env, local_ingress_env
from aiforge.scale.options import ScaleOptions, parse_autoscale, scale_options
from aiforge.serve.config import ServerConfig
from aiforge.serve.loadgen import free_port

_NO_RAY = """
import json, sys
import aiforge, aiforge.bundle, aiforge.cli, aiforge.scale, aiforge.scale.options, aiforge.scale.commands
after_import = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
from fastapi.testclient import TestClient
from aiforge.serve.app import create_app
with TestClient(create_app([aiforge.load(sys.argv[1])])) as client:
    client.get("/v2/health/live")
print(json.dumps({"after_import": after_import,
                  "after_serving": sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))}))
"""


def test_importing_aiforge_and_serving_in_process_never_imports_ray(german: Any) -> None:
    done = subprocess.run([sys.executable, "-c", _NO_RAY, str(german.path)], capture_output=True, text=True,
                          timeout=120, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"after_import": [], "after_serving": []}


def test_deployment_options_keep_ongoing_at_least_the_batch_and_bound_the_queue() -> None:
    options = ScaleOptions(replicas=3).deployment_options(ServerConfig(max_batch_size=32))
    assert options["num_replicas"] == 3 and options["max_ongoing_requests"] == 64 >= 32
    assert options["max_queued_requests"] == 256
    assert options["backpressure_config"] == {"status_code": 503, "retry_after_s": 1.0}
    auto = ScaleOptions(autoscale=(1, 4), target_ongoing_requests=8).deployment_options(ServerConfig())
    assert auto["num_replicas"] == "auto"
    assert auto["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 1,
                                          "target_ongoing_requests": 8}
    with pytest.raises(AiforgeError, match="below --max-batch-size 64"):
        ScaleOptions(max_ongoing_requests=16).deployment_options(ServerConfig(max_batch_size=64))


@pytest.mark.parametrize(("text", "message"), [("4", "expected MIN:MAX"), ("a:b", "expected MIN:MAX")])
def test_bad_autoscale_is_an_error_naming_the_option(text: str, message: str) -> None:
    with pytest.raises(AiforgeError, match=message):
        parse_autoscale(text)


def test_the_haproxy_ingress_gets_free_ports_and_the_proxy_ingress_turns_it_off() -> None:
    fast, slow = {**ingress_env("haproxy"), **local_ingress_env("haproxy")}, ingress_env("proxy")
    assert fast["RAY_SERVE_ENABLE_HA_PROXY"] == fast["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    ports = {int(fast["RAY_SERVE_HAPROXY_STATS_PORT"]), int(fast["RAY_SERVE_HAPROXY_METRICS_PORT"])}
    assert len(ports) == 2 and not ports & {8404, 9101}  # never Ray's fixed ports, which other clusters hold
    assert slow == {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
    assert local_ingress_env("proxy") == {}
    assert ScaleOptions().ray_ingress == "haproxy"


# Ray's own HAProxyApi renders its template with aiforge's environment (read when ray.serve is imported,
# hence a fresh interpreter) for one application with two replicas (ports 9001, 9002 unless given) behind
# a frontend (port 8000 unless given); prints the HAProxy binary's path.
_RENDER = """
import sys
from ray.serve.config import HTTPOptions
from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig, get_haproxy_binary
folder, ports = sys.argv[1], [int(p) for p in sys.argv[2:]] or [8000, 9001, 9002]
api = HAProxyApi(cfg=HAProxyConfig(socket_path=f"{folder}/admin.sock", server_state_base=folder,
                                   server_state_file=f"{folder}/state", metrics_socket_path=f"{folder}/metrics.sock",
                                   http_options=HTTPOptions(host="127.0.0.1", port=ports[0])),
                 config_file_path=f"{folder}/haproxy.cfg")
servers = [ServerConfig(name=f"r{k}", host="127.0.0.1", port=ports[k]) for k in (1, 2)]
api.backend_configs = {"app": BackendConfig(name="aiforge-app", path_prefix="/", app_name="aiforge-app",
                                            servers=servers)}
api._generate_config_file_internal()
print(get_haproxy_binary())
"""


def test_ray_renders_aiforge_haproxy_lines_where_they_belong(tmp_path: Path) -> None:
    env = dict(os.environ, **ingress_env("haproxy", max_ongoing=24, max_queued=40, retry_after_s=2),
               **local_ingress_env("haproxy"))
    done = subprocess.run([sys.executable, "-c", _RENDER, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    config = (tmp_path / "haproxy.cfg").read_text()
    # HAProxy itself parses it: every line aiforge adds is a directive this HAProxy (2.8) knows.
    check = subprocess.run([done.stdout.strip().splitlines()[-1], "-c", "-f", str(tmp_path / "haproxy.cfg")],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr + config
    defaults = config.partition("\ndefaults\n")[2].partition("\nfrontend ")[0]
    retry_on = "\n    retry-on conn-failure empty-response junk-response\n    option http-buffer-request\n"
    assert retry_on in defaults, defaults
    backend = config.partition("\nbackend aiforge-app\n")[2].partition("\nlisten ")[0]
    head, _, servers = backend.partition("\n    server ")
    assert " inter 5s maxconn 24\n" in head and "\n    timeout queue 1s\n" in head, backend
    assert "\n    http-request deny deny_status 503 if { queue ge 40 }\n" in head, backend
    assert head.index("deny deny_status") < head.index("\n    default-server check\n"), backend
    assert "http-error status 503 content-type application/json hdr retry-after 2 lf-string" in head, backend
    assert "http-error status 504 content-type application/json lf-string" in head, backend
    assert "http-response return status 503 content-type application/json hdr retry-after 2" in head, backend
    # a new server connection per request, replies held whole, HAProxy's own 502 sent as 503 (docs/scale.md)
    assert "\n    option http-server-close\n" in head, backend
    assert "\n    http-response wait-for-body time 1s if { res.hdr_val(content-length) le 8192 }\n" in head, backend
    own_502 = "\n    http-after-response set-status 503 if { res.hdr(x-aiforge-ingress-error) -m found }\n"
    assert own_502 in head, backend
    assert servers.startswith("r1 127.0.0.1:9001 check") and "\n    server r2 127.0.0.1:9002 check" in servers


class _DyingReplica(socketserver.BaseRequestHandler):
    """A replica that dies mid-request as a killed one does: ``/cut`` sends its headers and closes (the body
    never comes), ``/gone`` closes without an answer; ``/ok`` and the health check answer (HEAD: no body)."""

    def handle(self) -> None:
        request = self.request.recv(65536)
        if request.startswith(b"HEAD "):
            self.request.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n")
        elif b" /cut " in request:
            self.request.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 90\r\n\r\n")
        elif b" /gone " not in request:
            self.request.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")


def test_haproxy_answers_a_request_its_replica_dropped_503_with_retry_after(tmp_path: Path) -> None:
    # The real HAProxy with the config Ray renders from aiforge's environment, in front of two replicas that
    # die mid-request: what a client gets is an answer (503 + Retry-After + JSON), never a truncated answer or
    # a closed connection, on a fresh connection and on one reused after an answer (docs/scale.md).
    servers = [socketserver.ThreadingTCPServer(("127.0.0.1", 0), _DyingReplica) for _ in (1, 2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    front = free_port()
    env = dict(os.environ, **ingress_env("haproxy", max_ongoing=4, max_queued=8), **local_ingress_env("haproxy"))
    done = subprocess.run([sys.executable, "-c", _RENDER, str(tmp_path), str(front),
                           *(str(s.server_address[1]) for s in servers)],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    haproxy = subprocess.Popen([done.stdout.strip().splitlines()[-1], "-db", "-f", str(tmp_path / "haproxy.cfg")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{front}", timeout=10.0) as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if client.post("/ok", json={}).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            answers = [client.post(path, json={}) for path in ("/cut", "/ok", "/gone", "/ok", "/cut")]
            head = client.head("/ok")  # a bodiless answer with a Content-Length is not a cut-off one
    finally:
        haproxy.terminate()
        haproxy.wait(timeout=10)
        for server in servers:
            server.shutdown()
    assert [a.status_code for a in answers] == [503, 200, 503, 200, 503], [(a.status_code, a.text) for a in answers]
    assert head.status_code == 200 and head.headers["content-length"] == "2", head.headers
    for answer in answers[0::2]:
        assert answer.headers["retry-after"] == "1" and answer.headers["content-type"] == "application/json"
        assert answer.json() == {"error": "the replica was lost before it answered; retry shortly"}
        assert "x-aiforge-ingress-error" not in answer.headers


def test_autoscale_bounds_are_checked() -> None:
    with pytest.raises(AiforgeError, match="autoscale must be MIN:MAX"):
        scale_options(autoscale=(3, 1))
    assert scale_options(autoscale=parse_autoscale("0:2")).autoscale == (0, 2)


def test_deploy_kuberay_writes_a_rayservice_and_a_pinned_non_root_dockerfile(german: Any, tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    done = CliRunner().invoke(app, ["deploy", str(german.path), "--target", "kuberay", "-o", str(out),
                                    "--replicas", "3", "--workers", "2"])
    assert done.exit_code == 0, done.output
    doc = yaml.safe_load((out / "rayservice.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    cluster = doc["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == "2.60.0"
    name = german.export.record.name
    image = f"aiforge-{name}:{german.export.record.version}"
    pods = [cluster["headGroupSpec"]["template"]["spec"], cluster["workerGroupSpecs"][0]["template"]["spec"]]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
        assert pod["containers"][0]["image"] == image
        assert pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}  # the ingress serve runs by default
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1", env
        assert "option http-server-close" in env["RAY_SERVE_HAPROXY_HEALTH_CHECK_INTER"], env
    assert cluster["workerGroupSpecs"][0]["replicas"] == 2
    serve_config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    application = serve_config["applications"][0]
    assert application["import_path"] == "aiforge.scale.replica:build_app"
    assert application["route_prefix"] == "/" and application["args"]["bundle"] == "/opt/aiforge/bundle"
    assert application["args"]["name"] == name
    deployment = application["deployments"][0]
    assert deployment["name"] == name and deployment["num_replicas"] == 3
    assert deployment["max_ongoing_requests"] >= application["args"]["config"]["max_batch_size"]
    assert deployment["backpressure_config"]["retry_after_s"] == 1.0
    dockerfile = (out / "Dockerfile").read_text()
    assert "FROM rayproject/ray:2.60.0-py311-cpu" in dockerfile and "\nUSER 1000\n" in dockerfile
    assert "aiforge.cli verify /opt/aiforge/bundle" in dockerfile
    pins = (out / "requirements.txt").read_text().split()
    assert "ray[serve]==2.60.0" in pins and all("==" in p for p in pins)
    assert not any(p.startswith("torch") for p in pins)
    assert json.loads((out / "bundle" / "manifest.json").read_text())["name"] == name  # the bundle, copied whole
    assert (out / "aiforge" / "scale" / "replica.py").is_file()


def test_deploy_refuses_a_folder_that_is_not_empty(german: Any, tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep me")
    done = CliRunner().invoke(app, ["deploy", str(german.path), "-o", str(tmp_path)])
    assert done.exit_code == 1 and "not empty" in str(done.exception)


def test_batch_local_rejects_bad_rows_of_jsonl_and_parquet_with_file_and_row(
        german: Any, german_records: list[dict[str, Any]], tmp_path: Path) -> None:
    lines = [json.dumps(dict(r, id=f"j{i}")) for i, r in enumerate(german_records[:6], start=1)]
    lines[1] = "{not json"
    lines[3] = json.dumps(dict(german_records[3], id="j4", duration="forty"))
    lines[4] = json.dumps([1, 2])
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["batch", str(german.path), "--input", str(jsonl), "-o", str(out),
                                    "--id-column", "id", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "6 rows: 3 predictions" in done.output
    rejects = read_rejects(out)
    assert [(r["file"], r["row"]) for r in rejects] == [(str(jsonl), 2), (str(jsonl), 4), (str(jsonl), 5)]
    assert "not a JSON line" in rejects[0]["error"] and "duration" in rejects[1]["error"]
    assert "expected a JSON object" in rejects[2]["error"]
    assert read_predictions(out)["id"].tolist() == ["j1", "j3", "j6"]
    # Parquet keeps native types; a null in a numeric column is a missing value (imputed), not a reject.
    frame = pd.DataFrame([dict(r, id=i) for i, r in enumerate(german_records[:5])])
    frame.loc[2, "duration"] = None
    frame.to_parquet(tmp_path / "in.parquet")
    summary = CliRunner().invoke(app, ["batch", str(german.path), "-i", str(tmp_path / "in.parquet"),
                                       "-o", str(tmp_path / "pq"), "--no-progress"])
    assert summary.exit_code == 0, summary.output
    assert read_predictions(tmp_path / "pq")["id"].tolist() == ["0", "1", "2", "3", "4"]


def test_batch_names_a_missing_input_and_column(german: Any, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["batch", str(german.path), "-i", str(tmp_path / "nope*.csv"), "-o", str(tmp_path)])
    assert missing.exit_code == 1 and "no file matches" in str(missing.exception)
    (tmp_path / "a.csv").write_text("x,y\n1,2\n")
    column = runner.invoke(app, ["batch", str(german.path), "-i", str(tmp_path / "a.csv"), "-o", str(tmp_path / "o"),
                                 "--column", "text"])
    assert column.exit_code == 1 and "column 'text' not found" in str(column.exception)


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "ray", "--autoscale", "4"], "--autoscale '4': expected MIN:MAX"),
    (["--backend", "ray", "--replicas", "0"], "--replicas: Input should be greater than 0"),
    (["--backend", "kubernetes"], "backend 'kubernetes': expected local or ray"),
    (["--backend", "ray", "--ray-ingress", "nginx"], "--ray-ingress: Input should be 'proxy' or 'haproxy'"),
])
def test_serve_refuses_bad_scale_options_before_starting_anything(german: Any, args: list[str], message: str) -> None:
    done = CliRunner().invoke(app, ["serve", str(german.path), *args])
    assert done.exit_code == 1 and message in str(done.exception), (done.output, done.exception)
