"""The inference stage: objects classified in pandas UDFs, committed to Parquet and written into
the graph. `job.run_inference` is the entry point."""
