"""inventory-retraining: weekly retraining of a bin-object-counting model, orchestrated by Airflow."""

__version__ = "0.1.0"
