"""Refinery's crawl pipeline: readers, steps and the Ray job runner."""
