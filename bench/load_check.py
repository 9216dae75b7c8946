"""After a rating load test: is every acknowledged rating stored exactly once, and how fast
was it? Run by scripts/load.sh once gunicorn has stopped.

Usage: .venv/bin/python bench/load_check.py --study ID --acks FILE --csv PREFIX
`--acks` holds one JSON line per rating the server answered 200/201 (bench/load_rating.py);
`--csv` is the prefix locust wrote its statistics under. Exits 1 when the check fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fairskin_site.settings")

REQUESTS = ["login", "next item", "image", "submit rating"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def exactly_once(study_id: int, acks: list[dict]) -> list[str]:
    """Problems found; empty when every acknowledged rating is stored once, as sent."""
    from django.db.models import Count

    from review.models import Rating, RatingAudit

    problems = []
    stored = {
        r["assignment__token"]: r
        for r in Rating.objects.filter(study_id=study_id).values(
            "assignment__token", "rater__username", "score"
        )
    }
    # A repeat (200) is harmless; two creations (201) of one item would be a double write.
    for token, n in Counter(a["token"] for a in acks if a["status"] == 201).items():
        if n > 1:
            problems.append(f"created {n} times: {token}")
    for ack in acks:
        row = stored.get(ack["token"])
        if row is None:
            problems.append(f"{ack['rater']}: acknowledged rating not stored ({ack['token']})")
        elif row["rater__username"] != ack["rater"] or row["score"] != ack["score"]:
            problems.append(
                f"{ack['rater']}: stored {row['rater__username']}/{row['score']}, "
                f"acknowledged {ack['score']}"
            )
    doubles = (
        Rating.objects.filter(study_id=study_id)
        .values("rater", "assignment")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    if doubles:
        problems.append(f"{doubles} (rater, assignment) pairs stored more than once")
    created = RatingAudit.objects.filter(study_id=study_id, action="created").count()
    if created != len(stored):
        problems.append(f"{len(stored)} ratings stored but {created} 'created' audit rows")
    return problems


def locust_rows(prefix: str) -> dict[str, dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="") as fh:
        return {row["Name"]: row for row in csv.DictReader(fh)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--study", type=int, required=True)
    parser.add_argument("--acks", required=True)
    parser.add_argument("--csv", required=True, help="locust's --csv prefix")
    args = parser.parse_args()
    import django

    django.setup()
    from review.models import Rating

    acks = [json.loads(line) for line in Path(args.acks).read_text().splitlines() if line]
    rows = locust_rows(args.csv)
    # Locust writes its CSV when the time limit hits; the last items users finish during
    # --stop-timeout are in the console summary and in the acknowledgements only.
    print("locust CSV     count  fail     p50     p95     p99     max  (ms)")
    for name in REQUESTS + ["Aggregated"]:
        row = rows.get(name)
        if row:
            print(
                f"{name:<13} {row['Request Count']:>6} {row['Failure Count']:>5} "
                f"{row['50%']:>7} {row['95%']:>7} {row['99%']:>7} "
                f"{float(row['Max Response Time']):>7.0f}"
            )
    if acks:
        for label, key in (("next item + its image", "next_ms"), ("submit rating", "submit_ms")):
            values = [a[key] for a in acks]
            print(
                f"{label}, per acknowledged rating ({len(values)}): p50 "
                f"{percentile(values, 50):.0f}  p95 {percentile(values, 95):.0f}  "
                f"p99 {percentile(values, 99):.0f} ms;  mean {statistics.fmean(values):.0f} ms"
            )
    failures = Path(f"{args.csv}_failures.csv")
    if failures.exists():
        with failures.open(newline="") as fh:
            for row in csv.DictReader(fh):
                print(
                    f"failure: {row['Method']} {row['Name']}: {row['Error']} x{row['Occurrences']}"
                )
    stored = set(
        Rating.objects.filter(study_id=args.study).values_list("assignment__token", flat=True)
    )
    problems = exactly_once(args.study, acks)
    # Not a failure: a rating whose answer never reached its user (cut off at the time limit).
    unacknowledged = len(stored - {a["token"] for a in acks})
    print(
        f"acknowledged ratings: {len(acks)} ({sum(a['status'] == 201 for a in acks)} created, "
        f"{sum(a['status'] == 200 for a in acks)} repeats); stored: {len(stored)} "
        f"({unacknowledged} stored but never acknowledged)"
    )
    if problems:
        print(f"EXACTLY-ONCE CHECK FAILED ({len(problems)} problems):")
        for line in problems[:20]:
            print("  " + line)
        return 1
    print("exactly-once check passed: every acknowledged rating is stored once, with its score")
    return 0


if __name__ == "__main__":
    sys.exit(main())
