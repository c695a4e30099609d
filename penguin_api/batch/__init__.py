"""Whole photo collections: the `penguin-api predict` batch tool and `penguin-api merge`.

inputs (what to classify, and this task's share) -> pool (one process and model session
per core) -> rows (one per photo) -> output (CSV / JSONL file that a re-run resumes, or
one part of a Cloud Run Job). storage hides whether a path is local or gs://.
Nothing here is imported by the web service.
"""
