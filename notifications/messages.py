"""The words of each notification. A rater's message is built from the study's name and
number, how many items wait and a link, and nothing else: the functions that write to raters
take no image, rating, score, metric or origin, so none can reach them."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.urls import reverse


@dataclass(frozen=True)
class Message:
    subject: str
    body: str
    link: str  # the page's path on this site (the mail's body has the full address)


def absolute(path: str) -> str:
    return settings.FAIRSKIN_SITE_URL.rstrip("/") + path


def _study_title(*, study_id: int, study_name: str) -> str:
    return f"{study_name} (study #{study_id})" if study_name else f"study #{study_id}"


def _items(n: int) -> str:
    return f"{n} image{'s' if n != 1 else ''}"


def rater_assigned(*, study_id: int, study_name: str, waiting: int) -> Message:
    title = _study_title(study_id=study_id, study_name=study_name)
    link = reverse("review:rate", args=[study_id])
    return Message(
        subject=f"FairSkin: {title} has {_items(waiting)} for you to rate",
        body=(
            f"You have been asked to rate {_items(waiting)} in {title}.\n\n"
            f"Start rating here: {absolute(link)}\n"
        ),
        link=link,
    )


def rater_reminder(*, study_id: int, study_name: str, waiting: int) -> Message:
    title = _study_title(study_id=study_id, study_name=study_name)
    link = reverse("review:rate", args=[study_id])
    return Message(
        subject=f"FairSkin reminder: {_items(waiting)} still wait in {title}",
        body=(
            f"{_items(waiting).capitalize()} in {title} still wait for your ratings.\n\n"
            f"Continue where you stopped: {absolute(link)}\n"
        ),
        link=link,
    )


def lead_study_rated(*, study_id: int, study_name: str, raters: int) -> Message:
    title = _study_title(study_id=study_id, study_name=study_name)
    link = reverse("review:study", args=[study_id])
    return Message(
        subject=f"FairSkin: every rater finished {title}; its gate is ready",
        body=(
            f"All {raters} raters of {title} have rated every image assigned to them. "
            f"The gate can be read and the study closed: {absolute(link)}\n"
        ),
        link=link,
    )


def job_outcome(*, what: str, succeeded: bool, attempt: int, error: str, path: str) -> Message:
    if succeeded:
        return Message(
            subject=f"FairSkin: {what} succeeded",
            body=f"{what.capitalize()} finished successfully.\n\nSee it here: {absolute(path)}\n",
            link=path,
        )
    return Message(
        subject=f"FairSkin: {what} failed (attempt {attempt})",
        body=(
            f"{what.capitalize()} failed on attempt {attempt}:\n\n{error}\n\n"
            f"Its page, where you can resume it: {absolute(path)}\n"
        ),
        link=path,
    )
