"""Durable transcription jobs: records (SQLAlchemy), audio and results (directory or S3), the one
task that runs a job (embedded in the service, or on Celery workers), webhooks and metrics."""
