"""Settings for the app served by gunicorn in the database-restart scenario.

The test settings (themselves the production settings with test-safe defaults), with one
change: static files are served from the source folders, as with DEBUG on, so no
collectstatic (half a minute on two cores) is needed before the server starts. Everything
else, DEBUG off, the database connection handling and the middleware included, is production's.
"""

from fairskin_site.settings_test import *  # noqa: F403

WHITENOISE_USE_FINDERS = True
