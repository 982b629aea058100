"""What the notebooks call besides the code they show: demos, exercises, report text, plots, the panel, models."""
