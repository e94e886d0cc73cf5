"""A run's logged model at work after the run: score a new file (`ssimctr-predict`), evaluate a prepared
split (`ssimctr-evaluate`)."""
