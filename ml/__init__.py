"""The ML tables of the warehouse: plain Python over the marts (no Dagster); see docs/ml.md."""
