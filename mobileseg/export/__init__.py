"""Export targets (one module each) and the recipe-driven pipeline (`pipeline.export_model`)."""
