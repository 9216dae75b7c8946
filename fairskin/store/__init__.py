"""The artifact store: objects under keys (a local folder or an S3-compatible bucket), folders
published as trees with a manifest written last, and a per-host content-addressed cache.

Django-free, like the rest of the engine; boto3 is imported only when an S3 store is used.
"""
