"""The schema: dbmate migrations in `migrations/`, shipped inside the package as data (core/db.py
applies them)."""
