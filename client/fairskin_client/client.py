"""The client: one ``requests`` session with the token, and a small object per resource."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import requests

from fairskin_client.errors import BY_STATUS, FairSkinError, JobFailed

JSON = dict[str, Any]
TERMINAL = {"succeeded", "failed", "cancelled"}


class FairSkin:
    """``FairSkin("http://127.0.0.1:8000", "fsk_…")``: a personal API token from the account
    page. Every refusal raises a FairSkinError subclass with the server's message."""

    def __init__(self, url: str, token: str, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.datasets = Datasets(self)
        self.runs = Runs(self)
        self.batches = Batches(self)
        self.jobs = Jobs(self)
        self.studies = Studies(self)
        self.releases = Releases(self)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> FairSkin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self.session.request(
            method, f"{self.url}/api/{path.lstrip('/')}", timeout=self.timeout, **kwargs
        )
        if response.status_code >= 400:
            try:
                detail: Any = response.json()
            except ValueError:
                detail = response.text[:500]
            raise BY_STATUS.get(response.status_code, FairSkinError)(response.status_code, detail)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def post(self, path: str, body: JSON | None = None, **kwargs: Any) -> Any:
        if "files" in kwargs:
            return self.request("POST", path, data=body or {}, **kwargs).json()
        return self.request("POST", path, json=body or {}).json()

    def download(self, path: str, target: str | Path, **params: Any) -> Path:
        response = self.request("GET", path, params=params, stream=True)
        target = Path(target)
        with target.open("wb") as out:
            for chunk in response.iter_content(1 << 16):
                out.write(chunk)
        return target

    def wait(
        self,
        read: Callable[[], JSON],
        *,
        done: Callable[[JSON], bool],
        failed: Callable[[JSON], bool],
        label: str,
        progress: Callable[[JSON], str],
        poll: float = 2.0,
        timeout: float | None = None,
        out: Any = sys.stderr,
    ) -> JSON:
        """Poll ``read`` until ``done`` (returned) or ``failed`` (JobFailed), printing each new
        progress line."""
        start, last = time.monotonic(), ""
        while True:
            state = read()
            line = f"{label}: {progress(state)}"
            if line != last and out is not None:
                print(line, file=out, flush=True)
                last = line
            if done(state):
                return state
            if failed(state):
                raise JobFailed(200, state)
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"{label} still not done after {timeout:.0f} s ({line})")
            time.sleep(poll)


def _job_progress(job: JSON) -> str:
    phase = job.get("progress_phase") or job.get("progress_message") or ""
    total = job.get("progress_total") or 0
    count = f" {job.get('progress_done', 0)}/{total}" if total else ""
    return f"{job['state']}{count} {phase}".rstrip()


class Job:
    """A job to poll: ``client.jobs.get(id)`` or what ``datasets.upload`` returns."""

    def __init__(self, client: FairSkin, data: JSON) -> None:
        self.client, self.data = client, data

    @property
    def id(self) -> int:
        return int(self.data["id"])

    def refresh(self) -> JSON:
        self.data = self.client.get(f"jobs/{self.id}/")
        return self.data

    def wait(self, **options: Any) -> JSON:
        """Until the job has succeeded (its row returned) or failed (JobFailed)."""
        return self.client.wait(
            self.refresh,
            done=lambda j: j["state"] == "succeeded",
            failed=lambda j: j["state"] in TERMINAL - {"succeeded"},
            label=f"job {self.id} ({self.data.get('title') or self.data.get('kind')})",
            progress=_job_progress,
            **options,
        )


class Jobs:
    def __init__(self, client: FairSkin) -> None:
        self.client = client

    def get(self, job_id: int) -> Job:
        return Job(self.client, self.client.get(f"jobs/{job_id}/"))


class Datasets:
    def __init__(self, client: FairSkin) -> None:
        self.client = client

    def list(self) -> list[JSON]:
        return list(self.client.get("datasets/"))

    def get(self, name: str) -> JSON:
        return dict(self.client.get(f"datasets/{name}/"))

    def upload(
        self,
        *,
        fmt: str,
        name: str,
        metadata: BinaryIO,
        images: BinaryIO | None = None,
        **fields: str,
    ) -> Job:
        """Import a dataset (metadata CSV, optionally a zip of images): the import job."""
        files = {"metadata": metadata, **({"images": images} if images is not None else {})}
        body = {"format": fmt, "name": name, **fields}
        return Job(self.client, self.client.post("datasets/", body, files=files))

    def preprocess(self, name: str, *, hair_removal: bool = False, force: bool = False) -> Job:
        body = {"hair_removal": hair_removal, "force": force}
        return Job(self.client, self.client.post(f"datasets/{name}/preprocess/", body))

    def split(self, name: str, *, seed: int = 0, **fractions: float) -> dict[str, int]:
        return dict(
            self.client.post(f"datasets/{name}/split/", {"seed": seed, **fractions})["counts"]
        )


class _Launched:
    """Runs and batches: create, get, cancel, resume, wait."""

    path = ""

    def __init__(self, client: FairSkin) -> None:
        self.client = client

    def list(self) -> list[JSON]:
        return list(self.client.get(f"{self.path}/"))

    def get(self, pk: int) -> JSON:
        return dict(self.client.get(f"{self.path}/{pk}/"))

    def cancel(self, pk: int) -> JSON:
        return dict(self.client.post(f"{self.path}/{pk}/cancel/"))

    def resume(self, pk: int) -> JSON:
        return dict(self.client.post(f"{self.path}/{pk}/resume/"))


class Runs(_Launched):
    path = "runs"

    def create(
        self, *, kind: str, datasets: list[str], config: JSON | None = None, **options: Any
    ) -> JSON:
        """Launch a run (textual_inversion, lora, joint, classifier); ``config`` holds the
        settings that differ from the kind's defaults."""
        body = {"kind": kind, "datasets": datasets, "config": config or {}, **options}
        return dict(self.client.post("runs/", body))

    def wait(self, pk: int, **options: Any) -> JSON:
        return self.client.wait(
            lambda: self.get(pk),
            done=lambda r: r["state"] == "succeeded",
            failed=lambda r: r["state"] in TERMINAL - {"succeeded"},
            label=f"run {pk}",
            progress=lambda r: _job_progress(r["job"]) if r.get("job") else str(r["state"]),
            **options,
        )

    def artifact(self, pk: int, name: str, target: str | Path) -> Path:
        return self.client.download(f"runs/{pk}/artifact/", target, name=name)


class Batches(_Launched):
    path = "batches"

    def create(self, *, model_run: int, target: int, **settings: Any) -> JSON:
        return dict(
            self.client.post("batches/", {"model_run": model_run, "target": target, **settings})
        )

    def wait(self, pk: int, **options: Any) -> JSON:
        def progress(b: JSON) -> str:
            strata = b.get("strata") or []
            accepted = sum(s["accepted"] for s in strata)
            quota = sum(s["quota"] for s in strata)
            return f"{b['state']}: {accepted}/{quota} accepted"

        return self.client.wait(
            lambda: self.get(pk),
            done=lambda b: b["state"] == "finished",
            failed=lambda b: b["state"] in {"failed", "cancelled"},
            label=f"batch {pk}",
            progress=progress,
            **options,
        )

    def samples(self, pk: int, **filters: Any) -> JSON:
        return dict(self.client.get(f"batches/{pk}/samples/", **filters))

    def export(self, pk: int, target: str | Path, *, fmt: str = "csv") -> Path:
        return self.client.download(f"batches/{pk}/export/", target, format=fmt)


class Studies:
    def __init__(self, client: FairSkin) -> None:
        self.client = client

    def create(self, *, batch: int, raters: list[str], **design: Any) -> JSON:
        return dict(self.client.post("studies/", {"batch": batch, "raters": raters, **design}))

    def get(self, pk: int) -> JSON:
        return dict(self.client.get(f"studies/{pk}/"))

    def gate(self, pk: int) -> JSON:
        return dict(self.client.get(f"studies/{pk}/gate/"))

    def close(self, pk: int) -> JSON:
        return dict(self.client.post(f"studies/{pk}/close/", {"confirm": True}))

    def approve(self, pk: int, *, note: str = "") -> JSON:
        return dict(self.client.post(f"studies/{pk}/approve/", {"confirm": True, "note": note}))

    def reject(self, pk: int, *, reason: str) -> JSON:
        return dict(self.client.post(f"studies/{pk}/reject/", {"confirm": True, "reason": reason}))


class Releases:
    def __init__(self, client: FairSkin) -> None:
        self.client = client

    def get(self, pk: int) -> JSON:
        return dict(self.client.get(f"releases/{pk}/"))

    def download(self, pk: int, target: str | Path) -> Path:
        return self.client.download(f"releases/{pk}/download/", target)
