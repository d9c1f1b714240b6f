"""What aiforge adds to the ``haproxy.cfg`` that Ray 2.60 writes for its HAProxy ingress, and where it rides in.

Ray renders the config from ``HAPROXY_CONFIG_TEMPLATE`` (``ray/serve/_private/haproxy_templates.py``) and
offers no field for most of what backpressure needs (``HAProxyConfig.custom_defaults`` is never rendered;
``timeout_queue_s`` is never set). Two of its settings are written verbatim, so extra lines ride in on them:

- ``RAY_SERVE_HAPROXY_RETRY_ON`` ends the ``retry-on`` line of the ``defaults`` section:
  ``option http-buffer-request`` follows it (:data:`RETRY_ON`), so that HAProxy holds a whole request and
  can replay it on another replica when its replica dies (docs/scale.md).
- ``RAY_SERVE_HAPROXY_HEALTH_CHECK_INTER`` ends the ``default-server … inter 5s`` line that comes just
  before the ``server`` lines of every application's backend: :func:`backend_lines` adds a per-server
  ``maxconn`` (a replica's ``max_ongoing_requests``), ``timeout queue``, a refusal once ``max_queued``
  requests wait in the backend's queue (as Ray's proxy does with ``max_queued_requests``), a server
  connection per request and short answers held whole (so that a replica killed mid-request costs a 503,
  never an answerless close or a truncated answer: docs/scale.md), and HAProxy's own 502/503/504 as JSON
  (OpenAI's error object on the OpenAI routes, ``{"error": "..."}`` elsewhere), its 502 sent as a 503,
  with ``Retry-After`` on 503, and a replica's own non-JSON 503 (Ray's direct-ingress backpressure)
  rewritten to the same JSON. The value ends with ``default-server``, which takes the line's trailing
  ``check``.

Both depend on how Ray's template is written; ``tests/scale/test_scale_offline.py`` renders a config with
Ray's own code and checks (``haproxy -c``) that every line lands where it should.
"""

from __future__ import annotations

import json
import math

from aiforge.serve.errors import OPENAI_PATH as SERVER_OPENAI_PATH
from aiforge.serve.errors import error_body

__all__ = ["HEALTH_CHECK_INTER", "QUEUE_TIMEOUT_S", "RETRY_ON", "backend_lines", "haproxy_config_env"]

# junk-response: a reply cut off in its headers is replayed too (inference is idempotent); the request body is
# buffered whole, so a replay can resend it.
RETRY_ON = "conn-failure empty-response junk-response\n    option http-buffer-request"
HEALTH_CHECK_INTER = "5s"  # Ray's default, kept: the interval between health checks of a replica
QUEUE_TIMEOUT_S = 1  # a request waits at most this long for a free replica, then 503 + Retry-After
# A reply up to this size is held whole in HAProxy (16 KB buffers) before it is forwarded, so that one cut off by
# its replica's death becomes a 503 instead of a truncated answer; a longer or streamed one is forwarded as it comes.
HELD_REPLY_BYTES = 8192
# The OpenAI routes (serve/errors.py), also under a bundle's /NAME prefix when several are served.
OPENAI_PATH = "^(/[^/]+)?/" + SERVER_OPENAI_PATH.pattern.removeprefix("^/")
_LOST = "the replica was lost before it answered; retry shortly"
_MESSAGES = {502: _LOST,
             503: "over capacity: every replica is busy and the queue is full, or no replica is up; retry shortly",
             504: "the replica did not answer in time"}
_OWN = "x-aiforge-ingress-error"  # marks HAProxy's own 502, which leaves as a 503 (the replica's own 502 is kept)


def backend_lines(*, max_queued: int, retry_after_s: float) -> list[str]:
    """The lines added to each backend: replica and queue limits, replays, and HAProxy's own errors as JSON."""
    retry = max(1, math.ceil(retry_after_s))
    # A new connection to the replica per request: HAProxy answers a failed request on a reused server connection
    # by closing the client's connection with no answer (HTTP/1.1's "retry it yourself"), which the client sees as
    # a lost request; on a fresh one it sends its 503.
    lines = [f"timeout queue {QUEUE_TIMEOUT_S}s", "option http-server-close"]
    for status, message in _MESSAGES.items():
        plain, openai = (json.dumps(error_body(path, 503 if status == 502 else status, message)["error"],
                                    separators=(",", ":")) for path in ("/", "/v1/models"))
        # the error text is chosen per request, before the request is forwarded (its path is gone by a 502)
        lines += [f"http-request set-var-fmt(txn.aiforge_e{status}) '{plain}'",
                  f"http-request set-var-fmt(txn.aiforge_e{status}) '{openai}' if {{ path -m reg {OPENAI_PATH} }}",
                  f"http-error status {status} content-type application/json"
                  + (f" hdr retry-after {retry}" if status != 504 else "") + (f" hdr {_OWN} 1" if status == 502 else "")
                  + f" lf-string '{{\"error\":%[var(txn.aiforge_e{status})]}}'"]
    # After the variables: the refusal's body reads them. Ray's proxy refuses past max_queued_requests the same way.
    lines.append(f"http-request deny deny_status 503 if {{ queue ge {max_queued} }}")
    held = f"{{ res.hdr_val(content-length) le {HELD_REPLY_BYTES} }}"
    lines += [f"http-response wait-for-body time 1s if {held}",
              "http-response set-var(txn.aiforge_length) res.hdr_val(content-length)",
              # fewer bytes than announced once the body was waited for: the replica died mid-answer
              f"http-response return status 503 content-type application/json hdr retry-after {retry} "
              f"lf-string '{{\"error\":%[var(txn.aiforge_e502)]}}' if {held} "
              "{ res.body_len,sub(txn.aiforge_length) lt 0 } !METH_HEAD !{ status 304 }"]  # (those have no body)
    # A replica's own refusal (Ray's direct-ingress backpressure: text/plain) becomes the same JSON answer.
    lines.append(f"http-response return status 503 content-type application/json hdr retry-after {retry} "
                 "lf-string '{\"error\":%[var(txn.aiforge_e503)]}' "
                 "if { status 503 } !{ res.hdr(content-type) -m beg application/json }")
    # A request lost with its replica is 503 + Retry-After, as behind Ray's proxy (aiforge.scale.proxy).
    lines += [f"http-after-response set-status 503 if {{ res.hdr({_OWN}) -m found }}",
              f"http-after-response del-header {_OWN}"]
    return lines


def haproxy_config_env(*, max_ongoing: int | None, max_queued: int, retry_after_s: float) -> dict[str, str]:
    """The environment variables that carry aiforge's lines into Ray's HAProxy config (read when Serve starts)."""
    maxconn = f" maxconn {max_ongoing}" if max_ongoing else ""
    lines = "".join(f"\n    {line}" for line in backend_lines(max_queued=max_queued, retry_after_s=retry_after_s))
    return {"RAY_SERVE_HAPROXY_RETRY_ON": RETRY_ON, "RAY_SERVE_HAPROXY_RETRIES": "3",
            "RAY_SERVE_HAPROXY_HEALTH_CHECK_INTER": f"{HEALTH_CHECK_INTER}{maxconn}{lines}\n    default-server"}
