"""What the review services tell the rest of the site (notifications listens), sent inside
the transaction of the work they report.

- ``study_opened``: a study's preparation opened it; ``study`` and ``waiting``, each rater's
  id mapped to the number of items assigned to them.
- ``study_fully_rated``: the last rating of an open study was written, so every rater has
  finished and its gate can be read; ``study``.
"""

from django.dispatch import Signal

study_opened = Signal()
study_fully_rated = Signal()
