"""Settings for the test suite: the production settings with test-safe defaults.

The values go into the environment (not just this module) so that worker processes the
tests start read the same configuration.
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")
# Tests talk plain HTTP to the test client; production keeps the redirect on.
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
# Files the tests write stay out of the working tree; models are reused between runs.
os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="fairskin-test-media-"))
os.environ.setdefault("FAIRSKIN_ARTIFACTS_ROOT", tempfile.mkdtemp(prefix="fairskin-test-art-"))
os.environ.setdefault(
    "FAIRSKIN_MODEL_CACHE", os.path.join(tempfile.gettempdir(), "fairskin-test-models")
)
os.environ.setdefault("FAIRSKIN_TORCH_THREADS", "1")
# A tiny CLIP (random weights) keeps scoring fast on the CI's two cores.
os.environ.setdefault(
    "FAIRSKIN_CLIP_MODEL",
    os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "tests",
        "fixtures",
        "tiny_clip.json",
    ),
)

from fairskin_site.settings import *  # noqa: F403

# Tests do not run collectstatic; serve static files by their plain names.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only
