"""Airflow loads plugins from modules at the top of the plugins folder: expose the project's plugin here."""

from inventory_pipeline.airflow.plugin import InventoryRetrainingPlugin

__all__ = ["InventoryRetrainingPlugin"]
