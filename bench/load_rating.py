"""Locust users for the rating load test: dermatologists working through their queue.

Run by scripts/load.sh (`make load`), which seeds the study and starts gunicorn. Each user signs
in as its own account through the login page, then does what the rating screen (rate.js) does
for every image: ask the queue for the current item ("next item"), download its blinded image
("image"), look at it for a while, and post the rating with the CSRF token ("submit rating").
It stops when its queue is empty.

Environment: LOAD_STUDY_ID (the study), LOAD_PASSWORD, LOAD_ACKS (a file to which every rating
the server acknowledged with 200/201 is appended as a JSON line, for the exactly-once check),
LOAD_THINK_MIN / LOAD_THINK_MAX (seconds a rater looks at an image; default 0.5 to 2).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time

import gevent
from locust import HttpUser, task
from locust.exception import StopUser

STUDY_ID = int(os.environ.get("LOAD_STUDY_ID", "1"))
PASSWORD = os.environ.get("LOAD_PASSWORD", "load-derm-password")
RATERS = int(os.environ.get("LOAD_RATERS", "30"))
THINK = (
    float(os.environ.get("LOAD_THINK_MIN", "0.5")),
    float(os.environ.get("LOAD_THINK_MAX", "2.0")),
)
_accounts = itertools.cycle(range(1, RATERS + 1))
_acks = open(os.environ.get("LOAD_ACKS", os.devnull), "a", buffering=1)


class Dermatologist(HttpUser):
    # The think time is spent inside the task, between seeing the image and rating it.
    def wait_time(self):
        return 0

    def on_start(self):
        self.username = f"load-derm-{next(_accounts)}"
        self.client.get("/accounts/login/", name="login page")
        token = self.client.cookies.get("csrftoken")
        with self.client.post(
            "/accounts/login/",
            name="login",
            allow_redirects=False,
            data={"username": self.username, "password": PASSWORD, "csrfmiddlewaretoken": token},
            headers={"Referer": self.host + "/accounts/login/"},
            catch_response=True,
        ) as response:
            if response.status_code != 302:
                response.failure(f"{self.username} not signed in ({response.status_code})")
                raise StopUser()
        # Django rotates the CSRF token at login; the rating POSTs use the new one.
        self.csrf = self.client.cookies.get("csrftoken")

    @task
    def rate_one(self):
        started = time.perf_counter()
        with self.client.get(
            f"/api/rater/studies/{STUDY_ID}/queue/", name="next item", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"queue answered {response.status_code}")
                return
            current = response.json()["current"]
        if current is None:
            raise StopUser()  # this rater has finished the study
        with self.client.get(current["image"], name="image", catch_response=True) as response:
            if response.status_code != 200 or not response.content.startswith(b"\xff\xd8"):
                response.failure(f"image answered {response.status_code}")
                return
        next_ms = (time.perf_counter() - started) * 1000
        think = random.uniform(*THINK)
        gevent.sleep(think)
        score = random.randint(1, 7)
        with self.client.post(
            "/api/ratings/",
            name="submit rating",
            catch_response=True,
            json={"token": current["token"], "score": score, "seconds": round(think, 3)},
            headers={"X-CSRFToken": self.csrf, "Referer": self.host + "/"},
        ) as response:
            if response.status_code not in (200, 201):
                response.failure(f"rating answered {response.status_code}: {response.text[:120]}")
                return
        _acks.write(
            json.dumps(
                {
                    "rater": self.username,
                    "token": current["token"],
                    "score": score,
                    "status": response.status_code,
                    "next_ms": round(next_ms, 2),
                    "submit_ms": round(response.request_meta["response_time"], 2),
                }
            )
            + "\n"
        )
