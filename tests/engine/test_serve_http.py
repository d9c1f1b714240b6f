"""Every HTTP route of a real ``aiforge serve`` process on the session's trained bundle."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

import aiforge
from aiforge.bundle.runtime import Runtime
from aiforge.errors import ServerError
from aiforge.serve import Client
from serve_helpers import RunningServer, metric_samples, read_texts, serving, v2_body
from wrong_kind import KindRoute, check_wrong_kind, routes_for_other_kinds

MAX_INPUTS = 16
MAX_TEXT_CHARS = 2000


@pytest.fixture(scope="module")
def server(trained_bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("http-server") / "server.log"
    extra = ["--max-inputs", str(MAX_INPUTS), "--max-text-chars", str(MAX_TEXT_CHARS)]
    with serving(trained_bundle.export.path, trained_bundle.home, log, extra=extra) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def runtime(trained_bundle) -> Runtime:
    """The reference: the same bundle loaded in this process with the same defaults as the server."""
    return aiforge.load(trained_bundle.export.path)


@pytest.fixture(scope="module")
def texts(trained_bundle) -> list[str]:
    """16 real test texts, two per intent."""
    return read_texts(trained_bundle.data / "test.csv")[::5][:MAX_INPUTS]


def error_of(response: httpx.Response) -> str:
    """The ``error`` message of a JSON error body (fails the test when the body is not one)."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    return str(body["error"])


def outputs_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in body["outputs"]}


# ----- health and metadata -----------------------------------------------------------------


def test_server_metadata_and_health(http: httpx.Client, server: RunningServer) -> None:
    r = http.get("/v2")
    assert r.status_code == 200
    assert r.json() == {"name": "aiforge", "version": aiforge.__version__,
                        "extensions": ["binary_tensor_data", "model_version_ready", "request_compression"]}
    assert http.get("/v2/health/live").json() == {"live": True}
    r = http.get("/v2/health/ready")
    assert r.status_code == 200 and r.json() == {"ready": True}
    assert 0 < server.ready_seconds < 30


def test_model_metadata_ready_and_version(http: httpx.Client, trained_bundle, runtime: Runtime) -> None:
    name = trained_bundle.name
    r = http.get(f"/v2/models/{name}")
    assert r.status_code == 200
    meta = r.json()
    assert meta["name"] == name and meta["versions"] == [runtime.version] == ["1"]
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "score", "probabilities"]
    assert meta["outputs"][2]["shape"] == [-1, len(runtime.labels)]
    assert meta["parameters"]["labels"] == runtime.labels
    assert meta["parameters"]["precision"] == runtime.precision
    assert meta["parameters"]["task"] == "text-classification"

    r = http.get(f"/v2/models/{name}/ready")
    assert r.status_code == 200 and r.json() == {"name": name, "ready": True}

    r = http.get(f"/v2/models/{name}/versions/1")
    assert r.status_code == 200 and r.json() == meta


# ----- inference ---------------------------------------------------------------------------


def test_v2_infer_matches_the_runtime(http: httpx.Client, trained_bundle, runtime: Runtime, texts) -> None:
    r = http.post(f"/v2/models/{trained_bundle.name}/infer", json=v2_body(texts, id="req-42"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "req-42"
    assert body["model_name"] == trained_bundle.name and body["model_version"] == "1"
    out = outputs_of(body)
    assert list(out) == ["label", "score", "probabilities"]

    expected = runtime.predict(texts)
    k = len(runtime.labels)
    assert out["label"]["datatype"] == "BYTES" and out["label"]["shape"] == [len(texts)]
    assert out["label"]["data"] == [p.label for p in expected]
    probs = out["probabilities"]
    assert probs["datatype"] == "FP32" and probs["shape"] == [len(texts), k]
    matrix = np.asarray(probs["data"], dtype=np.float64).reshape(len(texts), k)
    np.testing.assert_allclose(matrix, runtime.predict_proba(texts), atol=1e-5)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(out["score"]["data"], matrix.max(axis=1), atol=1e-6)
    assert [runtime.labels[i] for i in matrix.argmax(axis=1)] == out["label"]["data"]


def test_v2_infer_on_a_version_and_with_an_n_by_1_shape(http: httpx.Client, trained_bundle, runtime, texts) -> None:
    some = texts[:3]
    body = {"inputs": [{"name": "text", "shape": [3, 1], "datatype": "BYTES", "data": some}]}
    r = http.post(f"/v2/models/{trained_bundle.name}/versions/1/infer", json=body)
    assert r.status_code == 200, r.text
    assert "id" not in r.json()
    assert outputs_of(r.json())["label"]["data"] == [p.label for p in runtime.predict(some)]


def test_v2_outputs_selection(http: httpx.Client, trained_bundle, runtime, texts) -> None:
    some = texts[:4]
    r = http.post(f"/v2/models/{trained_bundle.name}/infer",
                  json=v2_body(some, outputs=[{"name": "score"}, {"name": "label"}]))
    assert r.status_code == 200, r.text
    outs = r.json()["outputs"]
    assert [o["name"] for o in outs] == ["score", "label"]
    assert outs[1]["data"] == [p.label for p in runtime.predict(some)]


def test_v1_predict_with_and_without_top_k(http: httpx.Client, trained_bundle, runtime, texts) -> None:
    some = texts[:5]
    expected = runtime.predict(some)
    r = http.post(f"/v1/models/{trained_bundle.name}/predict", json={"inputs": some, "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == trained_bundle.name and body["version"] == "1"
    assert len(body["predictions"]) == len(some)
    for pred, exp in zip(body["predictions"], expected, strict=True):
        assert pred["label"] == exp.label
        assert pred["score"] == pytest.approx(exp.score, abs=1e-5)
        scores = list(pred["scores"].items())
        assert len(scores) == 3
        assert scores[0][0] == exp.label
        assert [v for _, v in scores] == sorted((v for _, v in scores), reverse=True)
        top3 = sorted(exp.scores.items(), key=lambda kv: -kv[1])[:3]
        assert [lab for lab, _ in scores] == [lab for lab, _ in top3]

    r = http.post(f"/v1/models/{trained_bundle.name}/predict", json={"inputs": some[:1]})
    assert r.status_code == 200
    scores = r.json()["predictions"][0]["scores"]
    assert set(scores) == set(runtime.labels)
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-4)


def test_v1_models_lists_the_bundle(http: httpx.Client, trained_bundle, runtime: Runtime) -> None:
    r = http.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True
    [model] = body["models"]
    assert model["name"] == trained_bundle.name and model["version"] == "1"
    assert model["labels"] == runtime.labels and model["task"] == "text-classification"
    assert model["precision"] == runtime.precision


def test_curl_style_bodies_without_a_json_content_type(http: httpx.Client, trained_bundle, runtime, texts) -> None:
    payload = json.dumps(v2_body(texts[:2])).encode()
    expected = [p.label for p in runtime.predict(texts[:2])]
    # what `curl -d` sends
    r = http.post(f"/v2/models/{trained_bundle.name}/infer", content=payload,
                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert outputs_of(r.json())["label"]["data"] == expected
    # no content type at all
    r = http.post(f"/v2/models/{trained_bundle.name}/infer", content=payload)
    assert "content-type" not in r.request.headers
    assert r.status_code == 200, r.text
    assert outputs_of(r.json())["label"]["data"] == expected


def test_concurrent_requests_each_get_their_own_answer(server: RunningServer, trained_bundle, runtime, texts) -> None:
    # Batches mix requests, and int8 activations are quantized per batch: compare labels only where
    # the reference is clearly confident.
    probs = np.concatenate([runtime.predict_proba([t]) for t in texts])
    top2 = np.sort(probs, axis=1)[:, -2:]
    confident = [t for t, (second, first) in zip(texts, top2, strict=True) if first - second > 0.2]
    assert len(confident) >= 6, "too few confident texts to check routing"
    expected = {t: runtime.labels[int(p.argmax())] for t, p in zip(texts, probs, strict=True)}
    work = confident * 3

    def one(text: str) -> tuple[int, str]:
        r = httpx.post(f"{server.url}/v1/models/{trained_bundle.name}/predict", json={"inputs": [text]}, timeout=60)
        return r.status_code, r.json()["predictions"][0]["label"] if r.status_code == 200 else r.text

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(one, work))
    assert [s for s, _ in results] == [200] * len(work)
    assert [label for _, label in results] == [expected[t] for t in work]


def test_python_client(server: RunningServer, trained_bundle, runtime: Runtime, texts) -> None:
    with Client(server.url) as client:
        assert client.ready() is True
        assert client.metadata(trained_bundle.name)["parameters"]["labels"] == runtime.labels
        preds = client.predict(trained_bundle.name, texts[:6])
        expected = runtime.predict(texts[:6])
        assert [p.label for p in preds] == [e.label for e in expected]
        for p, e in zip(preds, expected, strict=True):
            assert list(p.scores) == runtime.labels
            assert p.score == pytest.approx(e.score, abs=1e-5)
            assert p.scores == pytest.approx(e.scores, abs=1e-5)
        assert [p.label for p in client.predict(trained_bundle.name, texts[:2], version="1")] == \
            [e.label for e in expected[:2]]
        with pytest.raises(ServerError) as info:
            client.predict("no-such-model", ["hello"])
        assert info.value.status == 404
        assert "no-such-model" in str(info.value)
        with pytest.raises(ServerError) as info:
            client.predict(trained_bundle.name, ["hello"], version="7")
        assert info.value.status == 404


# ----- client mistakes: a JSON error with the right status, never a 500 ---------------------------

V2 = "/v2/models/{name}/infer"
V1 = "/v1/models/{name}/predict"


def _tensor(**changes: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"], **changes}]}


def _raw(body: str) -> dict[str, Any]:
    """Request kwargs that send ``body`` as it is (json= cannot send these bodies)."""
    return {"content": body.encode(), "headers": {"content-type": "application/json"}}


MISTAKES = [
    pytest.param("POST", V2, {"content": b'{"inputs": [', "headers": {"content-type": "application/json"}},
                 400, "not valid JSON", id="v2-malformed-json"),
    pytest.param("POST", V1, {"content": b"{inputs: ['a']}"}, 400, "not valid JSON", id="v1-malformed-json"),
    pytest.param("POST", V2, {"json": _tensor(shape="two")}, 422, "inputs.0.shape", id="v2-shape-not-a-list"),
    pytest.param("POST", V2, {"json": {"inputs": "hello"}}, 422, "inputs", id="v2-inputs-not-a-list"),
    pytest.param("POST", V2, {"json": {}}, 422, "inputs", id="v2-missing-inputs"),
    pytest.param("POST", V2, {"json": {"inputs": []}}, 422, "inputs", id="v2-no-tensor"),
    pytest.param("POST", V2, {"json": {"inputs": [{"name": "text", "shape": [1], "data": ["a"]}]}}, 422,
                 "inputs.0.datatype", id="v2-missing-datatype"),
    pytest.param("POST", V1, {"json": {"inputs": "hello"}}, 422, "inputs", id="v1-inputs-not-a-list"),
    pytest.param("POST", V1, {"json": {"inputs": [1, 2]}}, 422, "inputs[0]", id="v1-texts-not-strings"),
    pytest.param("POST", V1, {"json": {"inputs": ["a"], "top_k": 0}}, 422, "top_k", id="v1-top-k-zero"),
    pytest.param("POST", V1, {"json": {"inputs": ["a"], "top_k": "many"}}, 422, "top_k", id="v1-top-k-type"),
    pytest.param("POST", V1, {"json": {"inputs": ["a"], "text": "b"}}, 422, "text", id="v1-unknown-field"),
    pytest.param("POST", V1, {"json": {"inputs": []}}, 422, "inputs", id="v1-empty-inputs"),
    pytest.param("POST", V2, {"json": _tensor(datatype="FP32", data=[1.0, 2.0])}, 400, "BYTES", id="v2-fp32"),
    pytest.param("POST", V2, {"json": _tensor(shape=[3])}, 400, "shape [3]", id="v2-shape-data-mismatch"),
    pytest.param("POST", V2, {"json": _tensor(shape=[-2])}, 400, "shape", id="v2-negative-shape"),
    pytest.param("POST", V2, {"json": _tensor(data=[1, 2])}, 400, "string", id="v2-data-not-strings"),
    pytest.param("POST", V2, {"json": {"inputs": [*_tensor()["inputs"], *_tensor()["inputs"]]}}, 400,
                 "one input tensor", id="v2-two-tensors"),
    pytest.param("POST", V2, {"json": {**_tensor(), "outputs": [{"name": "logits"}]}}, 400, "logits",
                 id="v2-unknown-output"),
    pytest.param("POST", V2, {"json": _tensor(shape=[0], data=[])}, 422, "at least one input", id="v2-no-texts"),
    pytest.param("POST", "/v2/models/no-such-model/infer", {"json": _tensor()}, 404, "no-such-model",
                 id="v2-unknown-model"),
    pytest.param("GET", "/v2/models/no-such-model", {}, 404, "no-such-model", id="v2-unknown-model-metadata"),
    pytest.param("GET", "/v2/models/no-such-model/ready", {}, 404, "no-such-model", id="v2-unknown-model-ready"),
    pytest.param("POST", "/v1/models/no-such-model/predict", {"json": {"inputs": ["a"]}}, 404, "no-such-model",
                 id="v1-unknown-model"),
    pytest.param("POST", "/v2/models/{name}/versions/99/infer", {"json": _tensor()}, 404, "'99'",
                 id="v2-unknown-version"),
    pytest.param("GET", "/v2/models/{name}/versions/99", {}, 404, "'99'", id="v2-unknown-version-metadata"),
    pytest.param("POST", V2, {"json": v2_body(["hi"] * (MAX_INPUTS + 1))}, 422, f"limit of {MAX_INPUTS}",
                 id="v2-too-many-texts"),
    pytest.param("POST", V1, {"json": {"inputs": ["hi"] * (MAX_INPUTS + 1)}}, 422, f"limit of {MAX_INPUTS}",
                 id="v1-too-many-texts"),
    pytest.param("POST", V2, {"json": v2_body(["ok", "x" * (MAX_TEXT_CHARS + 1)])}, 422,
                 f"inputs[0].data[1]: text of {MAX_TEXT_CHARS + 1} characters, over the limit of {MAX_TEXT_CHARS}",
                 id="v2-text-too-long"),
    pytest.param("POST", V1, {"json": {"inputs": ["x" * (MAX_TEXT_CHARS + 1)]}}, 422,
                 f"limit of {MAX_TEXT_CHARS}", id="v1-text-too-long"),
    pytest.param("POST", V2, {"json": v2_body(["word " * 1000] * 250)}, 413, "1048576-byte limit",
                 id="body-over-1-MiB"),
    # issue 16, item 8: bodies json.loads refuses with RecursionError or ValueError (not a JSONDecodeError)
    pytest.param("POST", V1, _raw('{"inputs": [' + "[" * 10_000 + "]" * 10_000 + "]}"), 400,
                 "request body is not valid JSON: nested too deeply", id="v1-nested-10000-deep"),
    pytest.param("POST", V2, _raw('{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ['
                                  + "9" * 5000 + "]}]}"), 400, "Exceeds the limit (4300 digits)",
                 id="v2-5000-digit-integer"),
    pytest.param("POST", V1, _raw('{"inputs": ["ok", "a \\ud800"]}'), 422,
                 "inputs[1]: not valid Unicode text: lone surrogate U+D800 at character 2", id="v1-lone-surrogate"),
    pytest.param("GET", "/v3/models", {}, 404, "Not Found", id="unknown-route"),
    pytest.param("GET", V2, {}, 405, "Method Not Allowed", id="wrong-method"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "needle"), MISTAKES)
def test_client_mistakes_get_a_json_error(http: httpx.Client, trained_bundle, method: str, path: str,
                                          kwargs: dict[str, Any], status: int, needle: str) -> None:
    r = http.request(method, path.format(name=trained_bundle.name), **kwargs)
    assert r.status_code != 500, r.text
    assert r.status_code == status, r.text
    assert needle in error_of(r)


def test_error_bodies_are_json_whatever_the_message_quotes() -> None:
    # A message that quotes a client's lone surrogate cannot be UTF-8 encoded: Starlette's JSONResponse
    # raised UnicodeEncodeError while answering the 4xx, which turned it into a 500.
    from aiforge.serve.errors import ErrorResponse

    message = "filter.\ud800: unknown field; filterable fields are ['genres'] (é)"
    body = ErrorResponse({"error": message}, status_code=422).body
    assert json.loads(body) == {"error": message}
    assert body.isascii()


@pytest.mark.parametrize("route", routes_for_other_kinds("text-classification"))
def test_every_kind_route_refuses_a_text_model_with_the_same_400(http: httpx.Client, trained_bundle,
                                                                 route: KindRoute) -> None:
    check_wrong_kind(http, route, name=trained_bundle.name, served="text-classification")


def test_run_batch_is_the_classifiers_probability_rows(runtime: Runtime, texts) -> None:
    out = runtime.run_batch(texts[:5])
    assert len(out) == 5
    np.testing.assert_array_equal(np.asarray(out), runtime.predict_proba(texts[:5]))


def test_body_limit_applies_to_streamed_bodies_too(http: httpx.Client, trained_bundle) -> None:
    chunk = b" " * 65536

    def body() -> Iterator[bytes]:  # no content-length: chunked transfer encoding
        yield b'{"inputs": ['
        for _ in range(20):
            yield chunk

    r = http.post(V2.format(name=trained_bundle.name), content=body())
    assert "content-length" not in r.request.headers
    assert r.status_code == 413, r.text
    assert "limit" in error_of(r)


# ----- docs and metrics ----------------------------------------------------------------------


def test_docs_and_openapi(http: httpx.Client) -> None:
    r = http.get("/docs")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "swagger" in r.text.lower()
    r = http.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for route in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready",
                  "/v2/models/{name}/versions/{version}", "/v2/models/{name}/infer",
                  "/v2/models/{name}/versions/{version}/infer", "/v1/models", "/v1/models/{name}/predict"):
        assert route in paths, route
    assert "post" in paths["/v2/models/{name}/infer"]


def test_metrics_count_requests_and_batches_and_no_500(http: httpx.Client, trained_bundle, texts) -> None:
    name = trained_bundle.name
    before = metric_samples(http.get("/metrics").text)
    for _ in range(3):
        assert http.post(V2.format(name=name), json=v2_body(texts[:4])).status_code == 200
    r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "aiforge_requests_total" in r.text and "aiforge_batch_size" in r.text
    after = metric_samples(r.text)
    ok_key = ("aiforge_requests_total", (("route", "/v2/models/{name}/infer"), ("status", "200")))
    assert after[ok_key] - before.get(ok_key, 0) == 3
    batches = ("aiforge_batch_size_count", (("model", name),))
    assert after[batches] - before.get(batches, 0) >= 1
    items = ("aiforge_items_total", (("model", name),))
    assert after[items] - before.get(items, 0) == 12
    assert ("aiforge_queue_items", (("model", name),)) in after
    # over the whole module: client mistakes above were answered, none with a 500
    statuses = {dict(labels)["status"] for (metric, labels) in after if metric == "aiforge_requests_total"}
    assert "500" not in statuses, statuses
    assert "200" in statuses
