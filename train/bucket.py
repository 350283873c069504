"""gs:// workdirs: the bucket check before anything is written, and the lock that keeps one
run per bucket workdir (a bucket has no `flock`).

The lock is the object `DIR/.lock`, created only if absent (GCS precondition
`ifGenerationMatch=0`, so two runs cannot both create it), holding the holder's host, pid,
start and heartbeat times. The holder rewrites the heartbeat every HEARTBEAT_S seconds and
deletes the object when it stops (exit 0, 75 or an error). A SIGKILLed holder leaves it
behind; such a lock is stale, and taken over with a warning, when its host is this host and
its pid is gone, or when its heartbeat is older than STALE_S seconds (a holder on another
machine that died). Credentials: Application Default Credentials, as for every Google
Cloud client (`gcloud auth application-default login`, or a VM's service account).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from typing import Any

from errors import ConfigError

HEARTBEAT_S = 60     # the holder refreshes its lock this often
STALE_S = 600        # a lock whose heartbeat is this old has lost its holder
TIMEOUT_S = 20       # one request: an unreachable endpoint is reported, not waited for


def split(url: str) -> tuple[str, str]:
    """gs://BUCKET/PATH -> (BUCKET, PATH)."""
    bucket, _, key = url.partition("://")[2].partition("/")
    return bucket, key.strip("/")


def _client():
    try:
        from google.cloud import storage
    except ImportError:
        raise ConfigError("gs:// workdirs need google-cloud-storage and gcsfs "
                          "(pip install gcsfs).") from None
    try:
        return storage.Client()
    except Exception as e:  # no credentials, no project: a setup mistake, not a bug
        raise ConfigError(f"cannot use Google Cloud Storage: {_first_line(e)}. Set up Application "
                          "Default Credentials (gcloud auth application-default login).") from None


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def check_bucket(url: str) -> None:
    """The URL's bucket exists and answers; else one line (nothing is created or written)."""
    bucket, _ = split(url)
    if not bucket:
        raise ConfigError(f"workdir {url!r} names no bucket; use gs://BUCKET/PATH.")
    try:
        found = _client().bucket(bucket).exists(timeout=TIMEOUT_S, retry=None)
    except ConfigError:
        raise
    except Exception as e:  # connection refused, DNS, 403, ...
        raise ConfigError(f"cannot reach bucket gs://{bucket} ({_first_line(e)}); check the network, "
                          "STORAGE_EMULATOR_HOST if set, and your credentials.") from None
    if not found:
        raise ConfigError(f"bucket gs://{bucket} does not exist (workdir {url}); create it "
                          f"(gcloud storage buckets create gs://{bucket}) or use another --workdir.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(holder: dict, now: float | None = None) -> bool:
    """A lock whose holder is gone: its pid died on this host, or its heartbeat is old."""
    now = time.time() if now is None else now
    if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
        return True
    return now - float(holder.get("heartbeat", 0)) > STALE_S


def held(url: str) -> bool:
    """Whether a live run holds the lock object `url`."""
    current = BucketLock(url)._holder()
    return current is not None and not is_stale(current[0])


class BucketLock:
    """The lock object `url` (see the module docstring). `acquire` raises a ConfigError with
    `busy` (formatted with `pid` = "host:pid" and `folder`) while a live run holds it."""

    def __init__(self, url: str):
        self.url = url
        bucket, key = split(url)
        self._blob = _client().bucket(bucket).blob(key)
        self._generation: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.time()

    def _body(self) -> str:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "started": self._started, "heartbeat": time.time()})

    def _holder(self) -> tuple[dict, int] | None:
        from google.api_core import exceptions
        try:
            self._blob.reload(timeout=TIMEOUT_S)
            text = self._blob.download_as_text(timeout=TIMEOUT_S)
        except exceptions.NotFound:
            return None
        try:
            return json.loads(text), self._blob.generation
        except ValueError:  # cut short: treat as stale
            return {}, self._blob.generation

    def acquire(self, busy: str) -> "BucketLock":
        from google.api_core import exceptions
        current = self._holder()
        if current is not None:
            holder, generation = current
            if not is_stale(holder):
                who = f"{holder.get('host', '?')}:{holder.get('pid', '?')}"
                raise ConfigError(busy.format(pid=who, folder=os.path.dirname(self.url)))
            print(f"strata: warning: taking over the stale lock {self.url} of "
                  f"{holder.get('host', '?')}:{holder.get('pid', '?')} (see README, bucket workdirs).",
                  file=sys.stderr, flush=True)
            match = generation
        else:
            match = 0  # create only if absent
        try:
            self._blob.upload_from_string(self._body(), if_generation_match=match, timeout=TIMEOUT_S)
        except exceptions.PreconditionFailed:
            raise ConfigError(busy.format(pid="another process", folder=os.path.dirname(self.url))) from None
        self._generation = self._blob.generation
        self._thread = threading.Thread(target=self._beat, name="strata-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._blob.upload_from_string(self._body(), if_generation_match=self._generation,
                                              timeout=TIMEOUT_S)
                self._generation = self._blob.generation
            except Exception as e:  # a lost heartbeat: say so, keep training
                print(f"strata: warning: could not refresh the lock {self.url}: {_first_line(e)}",
                      file=sys.stderr, flush=True)

    def release(self) -> None:
        """Stops the heartbeat and deletes the lock object (if it is still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._generation is None:
            return
        from google.api_core import exceptions
        try:
            self._blob.delete(if_generation_match=self._generation, timeout=TIMEOUT_S)
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            pass
        self._generation = None

    def __enter__(self) -> "BucketLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
