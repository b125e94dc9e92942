"""Storage housekeeping of the project bucket (`storage gc`)."""
