"""Scale-out of any bundle on Ray: Ray Serve replicas (``serve_ray``), Ray Data batch jobs (``batch``), KubeRay files.

Ray is an optional extra (``pip install 'aiforge[ray]'``). Nothing here imports it at module level except
:mod:`aiforge.scale.replica` and :mod:`aiforge.scale.ray_data`, which only the Ray code paths import, so
``import aiforge`` and the in-process server stay Ray-free.

::

    options.py   ScaleOptions (replicas, autoscale, address) and the Ray deployment settings they give
    cluster.py   require_ray() and connect(): join a cluster or start a local one
    haproxy.py   the lines aiforge adds to the haproxy.cfg Ray writes (limits, JSON errors) and where they ride in
    replica.py   the Ray Serve deployment: one bundle's create_app() app, plus the x-aiforge-replica header
    serving.py   serve_ray() / start_ray_serve(): deploy every bundle, wait until ready
    batch.py     batch(): files in, predictions.parquet + rejects.jsonl out, --backend local or ray
    rows.py      reading input files in chunks and turning rows into a runtime's items (shared by both backends)
    ray_data.py  the Ray Data pipeline of batch(): read, map_batches over Runtime actors, stream back
    kuberay.py   deploy_kuberay(): a RayService manifest and a Dockerfile for one bundle
"""
