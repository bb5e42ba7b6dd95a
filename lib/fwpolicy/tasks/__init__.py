"""The runs that orchestrate the query and the review tables: run, nightly, audit, demo data."""
