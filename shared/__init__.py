"""batchdrop's pipeline, free of the Functions runtime: importable and testable on its own."""
