"""Storage: the Spark session, the source lake, the Delta output tables and ingest."""
