"""fastconv's benchmark runner (python -m bench); bench/README.md describes it."""
