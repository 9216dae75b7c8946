"""What the jobs app tells the rest of the site, without knowing who listens.

``job_finished`` is sent inside the transaction that records a job's outcome (its worker's
success, failure or cancellation, or the sweep giving up), with ``state`` and ``job``: a row
of that job, possibly a partial one read before the change (re-read it by ``pk``; its
``attempt`` is the attempt that ended). A receiver that writes joins that
transaction; one that must not fail the work catches its own errors (notifications does).
"""

from django.dispatch import Signal

job_finished = Signal()
