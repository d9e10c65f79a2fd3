"""The processing pipeline: durable jobs that follow a store, run by every worker."""
