"""What the jobs app tells the rest of the site, without knowing who listens.

``job_finished`` is sent inside the transaction that records a job's outcome (its worker's
success or failure, or the sweep giving up), with ``job`` (the row as it now reads, its
``attempt`` the attempt that ended) and ``state``. A receiver that writes joins that
transaction; one that must not fail the work catches its own errors (notifications does).
"""

from django.dispatch import Signal

job_finished = Signal()
