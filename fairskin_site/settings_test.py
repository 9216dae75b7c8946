"""Settings for the test suite: the production settings with test-safe defaults.

The values go into the environment (not just this module) so that worker processes the
tests start read the same configuration.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")
# Tests talk plain HTTP to the test client; production keeps the redirect on.
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")

from fairskin_site.settings import *  # noqa: E402,F403

# Tests do not run collectstatic; serve static files by their plain names.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only
