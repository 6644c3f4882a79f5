"""DSIR: data selection with importance resampling over hashed n-gram features."""
