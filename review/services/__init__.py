"""Writes on review studies, one module per stage: study (create and prepare), rating, gate
(close and judge) and release (approve or reject). Import from the module itself; nothing is
re-exported here.

Every rule is enforced in these services, not only in the pages: a rating for another rater's
token, for a closed study, out of order or changing a locked rating is refused (and audited);
approval needs a closed study whose gate passed.
"""
