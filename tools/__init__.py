"""Developer tools: run from the repository, never imported by the services."""
