"""Model wrappers, one module per family; torch and friends are imported lazily."""
