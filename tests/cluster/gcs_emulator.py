"""A Google Cloud Storage emulator on 127.0.0.1 for the bucket-workdir tests.

    python tests/cluster/gcs_emulator.py PORT BUCKET [BUCKET ...]   # in memory; SIGTERM stops it

It is the `gcp-storage-emulator` package (the test extra) with the two things of GCS that
Strata's clients rely on and it lacks, added here:
- `x-goog-generation` on object downloads: tensorstore (Orbax's OCDBT checkpoints) reads an
  object's generation from it and refuses a read without one;
- generation preconditions (`ifGenerationMatch`, JSON API; `x-goog-if-generation-match`,
  XML API) on uploads, patches and deletes, answered 412 on a mismatch as GCS does: the
  bucket lock (train/bucket.py) creates its object with `ifGenerationMatch=0`.
Prints `ready` once it serves. Point clients at it with STORAGE_EMULATOR_HOST (gcsfs,
google-cloud-storage) and TENSORSTORE_GCS_HTTP_URL (tensorstore): tests/test_buckets.py.
"""
from __future__ import annotations

import signal
import sys
import threading
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def _object_name(request) -> str | None:
    if request.query.get("name"):
        return request.query["name"][0]
    data = request.data
    if isinstance(data, dict) and isinstance(data.get("meta"), dict) and data["meta"].get("name"):
        return data["meta"]["name"]
    return request.params.get("object_id")


def _generation(storage, bucket: str, name: str) -> int:
    try:
        return int(storage.get_file_obj(bucket, name)["generation"])
    except NotFound:
        return 0


def _with_preconditions(handler):
    def checked(request, response, storage, *args, **kwargs):
        wanted = (request.query.get("ifGenerationMatch") or [None])[0]
        wanted = wanted if wanted is not None else request.get_header("x-goog-if-generation-match")
        name = _object_name(request)
        if wanted is not None and name is not None:
            if _generation(storage, request.params["bucket_name"], name) != int(wanted):
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "Precondition Failed"}})
                return
        return handler(request, response, storage, *args, **kwargs)
    return checked


def _with_generation_header(handler):
    def download(request, response, storage, *args, **kwargs):
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
        except NotFound:
            pass
        return handler(request, response, storage, *args, **kwargs)
    return download


def _patch() -> None:
    original = objects.download
    wrap = {fn: _with_preconditions(fn) for fn in
            (objects.insert, objects.xml_upload, objects.delete, objects.patch, objects.get)}
    wrap[original] = objects.download = _with_generation_header(original)  # `get` calls it too
    server.HANDLERS = tuple((regex, {method: wrap.get(fn, fn) for method, fn in handlers.items()})
                            for regex, handlers in server.HANDLERS)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    port, buckets = int(argv[0]), argv[1:]
    _patch()
    emulator = server.create_server("127.0.0.1", port, in_memory=True, default_bucket=buckets[0])
    for name in buckets[1:]:
        server.buckets.create_bucket(name, emulator._storage)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    emulator.start()
    print("ready", flush=True)
    stop.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
