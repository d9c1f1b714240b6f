"""The contract every application kind keeps, run against every row of ``tasks/registry.py`` (like
scikit-learn's ``estimator_checks``).

For each kind: its light modules import without torch and serving its bundle never loads torch; its example
specs survive a round trip; a small real bundle loads and predicts one item; a flipped byte is refused with
``ChecksumError`` naming the file; its own routes answer 400 with ``{"error": ...}`` for a model of another
kind. Table checks: every "module:attr" resolves, every package under ``tasks/`` has one row and the stage files.

A new kind gets all of this by adding its row and one ``CASES`` entry below (its bundle fixture, one valid
item, a request its server answers); ``test_every_kind_has_a_case`` fails until it does.
"""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from aiforge.bundle.runtime import Runtime
from aiforge.errors import ChecksumError
from aiforge.spec import BaseSpec
from aiforge.tasks.registry import KINDS, Kind, resolve
from serve_helpers import serve_in_child

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "src" / "aiforge" / "tasks"
STAGE_FILES = ("spec.py", "task.py", "runtime.py")
# Never loaded by importing a kind's light modules, loading its bundle or serving it.
HEAVY = ["torch", "transformers", "onnx", "sklearn", "fairlearn", "implicit"]


@dataclass(frozen=True)
class KindBundle:
    """A registered bundle of one kind, built once per session by that kind's fixtures."""

    home: Path
    path: Path
    name: str
    item: Any  # one valid input for the case's ``predict``


@dataclass(frozen=True)
class Case:
    """How to reach and exercise one kind's bundle."""

    bundle: Callable[[pytest.FixtureRequest], KindBundle]
    predict: Callable[[Runtime, KindBundle], None]  # predicts ``item`` and checks the answer's shape
    requests: Callable[[KindBundle], list[tuple[str, dict[str, Any]]]]  # POSTs its server answers with 200
    wrong_kind: Callable[[str], list[tuple[str, dict[str, Any]]]] = lambda name: []  # its routes, model ``name``


def _text(request: pytest.FixtureRequest) -> KindBundle:
    b = request.getfixturevalue("trained_bundle")
    return KindBundle(b.home, Path(b.export.path), b.name, "I lost my card")


def _tabular(request: pytest.FixtureRequest) -> KindBundle:
    b = request.getfixturevalue("german")
    return KindBundle(b.home, b.path, b.export.record.name, request.getfixturevalue("records")[0])


def _image(request: pytest.FixtureRequest) -> KindBundle:
    from vision_helpers import trained_images

    b = trained_images()
    png = next((b.data / "test" / "Bag").glob("*.png")).read_bytes()
    return KindBundle(b.home, Path(b.export.path), b.export.record.name, png)


def _recommend(request: pytest.FixtureRequest) -> KindBundle:
    b = request.getfixturevalue("rec_bundle")
    return KindBundle(b.home, Path(b.export.path), b.export.record.name, None)


def _chat(request: pytest.FixtureRequest) -> KindBundle:
    b = request.getfixturevalue("acme")
    return KindBundle(b.home, b.path, b.name, "How do I reset my password?")


def _driving(request: pytest.FixtureRequest) -> KindBundle:
    from driving_helpers import radar, trained_driving

    b = trained_driving()
    return KindBundle(b.home, b.path, b.name, radar((12.0, 0.0, -8.0, 0.0)).tolist())


def _act(rt: Any, b: KindBundle) -> None:
    [act] = rt.act([b.item])  # a car closing in ahead: whatever the policy says, the shield brakes
    assert act.action == "SLOWER" and act.shield_overrode == (act.proposed != "SLOWER")


def _predict_label(rt: Runtime, b: KindBundle) -> None:
    [pred] = rt.predict([b.item])
    assert pred.label in rt.labels and set(pred.scores) == set(rt.labels)
    assert abs(sum(pred.scores.values()) - 1.0) < 1e-2  # an int8 graph's softmax comes in steps of 1/255


def _recommend_k(rt: Any, b: KindBundle) -> None:
    out = rt.recommend(rt.user_ids[0], k=3)
    assert len(out["recommendations"]) == 3 and out["cold_start"] is None  # a known user


def _ask(rt: Any, b: KindBundle) -> None:
    turn = rt.ask(b.item)
    assert turn.citations and "Settings" in turn.text, turn
    assert rt.embed([b.item]).shape[0] == 1


def _v1_predict(b: KindBundle) -> list[tuple[str, dict[str, Any]]]:
    return [(f"/v1/models/{b.name}/predict", {"inputs": [b.item]})]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


CASES: dict[str, Case] = {
    "text-classification": Case(_text, _predict_label, _v1_predict),
    "tabular-classification": Case(_tabular, _predict_label, _v1_predict),
    "image-classification": Case(
        _image, _predict_label,
        lambda b: [(f"/v1/models/{b.name}/classify", {"images": [_b64(b.item)]})],
        lambda name: [(f"/v1/models/{name}/classify", {"images": [_b64(b"not an image")]}),
                      (f"/v1/models/{name}/explain", {"images": [_b64(b"not an image")]})]),
    "recommendation": Case(
        _recommend, _recommend_k,
        lambda b: [(f"/v1/models/{b.name}/recommend", {"user": "no-such-user", "k": 3})],  # cold start
        lambda name: [(f"/v1/models/{name}/recommend", {"user": "u1", "k": 3}),
                      (f"/v1/models/{name}/similar", {"item": "i1", "k": 3})]),
    "driving": Case(
        _driving, _act,
        lambda b: [(f"/v1/models/{b.name}/act", {"observation": b.item})],
        lambda name: [(f"/v1/models/{name}/act", {"observation": [[0.0] * 7] * 7})]),
    "chat": Case(
        _chat, _ask,
        lambda b: [("/v1/chat/completions", {"model": b.name, "messages": [{"role": "user", "content": b.item}]}),
                   ("/v1/embeddings", {"model": b.name, "input": [b.item]})],
        lambda name: [("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "hi"}]}),
                      ("/v1/completions", {"model": name, "prompt": "hi"}),
                      ("/v1/embeddings", {"model": name, "input": "hi"}),
                      ("/v1/chat/sessions", {"model": name})]),
}

by_kind = pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
routed = [k for k in KINDS if k.routes]


def _bundle(kind: Kind, request: pytest.FixtureRequest) -> KindBundle:
    return CASES[kind.name].bundle(request)


# --- the table -----------------------------------------------------------------------------------


def test_every_kind_has_a_case() -> None:
    assert sorted(CASES) == sorted(k.name for k in KINDS), "add a CASES entry for each row of tasks/registry.py"


def test_every_package_under_tasks_has_exactly_one_row_and_vice_versa() -> None:
    packages = sorted(f"aiforge.tasks.{p.name}" for p in TASKS.iterdir() if (p / "__init__.py").is_file())
    rows = [k.package for k in KINDS]
    assert sorted(rows) == packages, f"packages under tasks/: {packages}; rows of the kinds table: {rows}"
    assert len({k.name for k in KINDS}) == len(KINDS), "two rows share a task name"


@by_kind
def test_the_row_targets_resolve_to_the_kinds_parts(kind: Kind) -> None:
    for role, target in kind.targets().items():
        module = target.partition(":")[0]
        assert module.startswith(kind.package + "."), f"{kind.name}.{role} = {target!r} lies outside {kind.package}"
    spec_cls = resolve(kind.spec)
    assert issubclass(spec_cls, BaseSpec) and spec_cls.model_fields["task"].default == kind.name
    runtime_cls = resolve(kind.runtime)
    assert issubclass(runtime_cls, Runtime) and runtime_cls.task == kind.name
    assert resolve(kind.task)().name == kind.name
    if kind.routes:
        assert isinstance(resolve(kind.routes), APIRouter)
    if kind.commands:
        assert callable(resolve(kind.commands))


@by_kind
def test_the_kind_package_has_the_stage_files(kind: Kind) -> None:
    folder = TASKS / kind.package.rpartition(".")[2]
    wanted = [*STAGE_FILES, *(["routes.py"] if kind.routes else []), *(["commands.py"] if kind.commands else [])]
    missing = [name for name in wanted if not (folder / name).is_file()]
    assert not missing, f"{folder} lacks {missing}"


# --- the spec ------------------------------------------------------------------------------------


def _examples() -> dict[str, list[Path]]:
    import yaml

    found: dict[str, list[Path]] = {}
    for path in sorted((REPO / "examples").glob("*/aiforge.yaml")):
        found.setdefault(yaml.safe_load(path.read_text(encoding="utf-8"))["task"], []).append(path)
    return found


@by_kind
def test_example_specs_round_trip(kind: Kind) -> None:
    spec_cls = resolve(kind.spec)
    paths = _examples().get(kind.name, [])
    assert paths, f"no example spec under examples/ has task: {kind.name}"
    for path in paths:
        spec = BaseSpec.from_yaml(path)
        assert type(spec) is spec_cls, path
        for mode in ("python", "json"):  # json: what writing the spec back to YAML would keep
            again = BaseSpec.from_dict(spec.model_dump(mode=mode), source=str(path))
            assert type(again) is spec_cls and again == spec, f"{path} ({mode} dump)"


# --- the bundle ----------------------------------------------------------------------------------


@by_kind
def test_bundle_loads_and_predicts_one_item(kind: Kind, request: pytest.FixtureRequest) -> None:
    import aiforge

    b = _bundle(kind, request)
    rt = aiforge.load(b.path, home=b.home)
    assert isinstance(rt, resolve(kind.runtime)) and rt.manifest.task == kind.name and rt.name == b.name
    assert Runtime.load(b.name, home=b.home).path == rt.path  # by registry name, too
    CASES[kind.name].predict(rt, b)


@by_kind
def test_a_flipped_byte_is_refused_naming_the_file(kind: Kind, request: pytest.FixtureRequest,
                                                   tmp_path: Path) -> None:
    from aiforge.bundle.format import read_manifest

    b = _bundle(kind, request)
    copy = Path(shutil.copytree(b.path, tmp_path / "bundle"))
    manifest = read_manifest(copy)  # the untouched copy verifies
    rel = max(manifest.files, key=lambda name: manifest.files[name]["size"])  # the weights, where a flip hides
    data = bytearray((copy / rel).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / rel).write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=f"file {rel!r} does not match its sha256"):
        Runtime.load(copy, home=tmp_path)


@by_kind
def test_light_modules_and_serving_never_load_torch(kind: Kind, request: pytest.FixtureRequest) -> None:
    b = _bundle(kind, request)
    light = [t.partition(":")[0] for role, t in kind.targets().items() if role != "task"]
    imports = ["aiforge", "aiforge.bundle", *light, "aiforge.cli", "aiforge.commands", "aiforge.serve.app"]
    requests = CASES[kind.name].requests(b)
    report = serve_in_child(b.path, b.home, imports=imports, requests=requests, watch=HEAVY)
    pulled = {module: mods for module, mods in report.after_import.items() if mods}
    assert not pulled, f"importing these loads heavy modules (first one is the culprit): {pulled}"
    assert report.after_load == [], f"aiforge.load({b.path}) loaded {report.after_load}"
    assert report.statuses == [200] * len(requests), report
    assert report.after_serving == [], f"serving {kind.name} loaded {report.after_serving}"


# --- the routes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_kind_clients(request: pytest.FixtureRequest) -> Iterator[dict[str, tuple[TestClient, str]]]:
    """Per routed kind: a client of a running app that serves only a model of another kind, and its name."""
    from aiforge.serve.app import create_app

    with ExitStack() as stack:
        servers: dict[str, tuple[TestClient, str]] = {}
        for kind in routed:
            other = next(k for k in KINDS if k.name != kind.name)
            if other.name not in servers:
                b = _bundle(other, request)
                client = stack.enter_context(TestClient(create_app([b.path])))
                deadline = time.monotonic() + 60
                while client.get("/v2/health/ready").status_code != 200:
                    assert time.monotonic() < deadline, f"{b.path} not ready within 60 s"
                    time.sleep(0.05)
                servers[other.name] = (client, b.name)
        yield {kind.name: servers[next(k for k in KINDS if k.name != kind.name).name] for kind in routed}


@pytest.mark.parametrize("kind", routed, ids=[k.name for k in routed])
def test_the_kinds_routes_refuse_a_model_of_another_kind(kind: Kind, other_kind_clients: Any) -> None:
    client, other = other_kind_clients[kind.name]
    calls = CASES[kind.name].wrong_kind(other)
    router: APIRouter = resolve(kind.routes)
    posted = sorted(r.path for r in router.routes if isinstance(r, APIRoute) and "POST" in r.methods)
    assert sorted(path.replace(other, "{name}") for path, _ in calls) == posted, \
        "the case must call every POST route of the kind's router"
    for path, body in calls:
        r = client.post(path, json=body)
        assert r.status_code == 400, (path, r.status_code, r.text)
        error = r.json().get("error")
        if isinstance(error, dict):  # the OpenAI routes' shape
            error = error["message"]
        assert isinstance(error, str) and other in error, (path, r.text)
