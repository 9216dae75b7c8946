"""Blinded realism review: the acceptance gate, rater agreement and blinding statistics."""
